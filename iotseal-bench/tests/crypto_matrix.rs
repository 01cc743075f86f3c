//! `iotseal bench crypto` logic on a tiny configuration: the JSON fields, and what the
//! ciphertext analysis must find (uniform-looking ciphertext, a ≈ 50% tag change on a one-bit
//! flip, exactly one ciphertext bit changed under the same nonce).
//!
//! `IOTSEAL_BENCH_WRITE_FIXTURE=1 cargo test -p iotseal-bench --test crypto_matrix` rewrites
//! `tests/fixtures/report-in/crypto.json` (the report test's input) from this run.

use iotseal_bench::baseline::BASELINE_AEAD_NAME;
use iotseal_bench::matrix::{self, Config, CryptoReport};

fn tiny() -> Config {
    Config {
        quick: true,
        providers: vec!["aws-lc".into()],
        kems: vec!["x25519".into()],
        sigs: vec!["ed25519".into()],
        aeads: vec!["aes256gcm".into(), "chacha20poly1305".into()],
        baseline: true,
        handshake_iterations: 5,
        handshake_warmup: 1,
        record_sizes: vec![64, 1024],
        record_batches: 3,
        record_batch_bytes: 16 * 1024,
        record_samples: 50,
        memory_sessions: 100,
        analysis_bytes: 32 * 1024,
        flip_trials: 64,
        notes: vec!["tiny test configuration".into()],
    }
}

#[test]
fn tiny_matrix_measures_everything() {
    let mut steps = Vec::new();
    let r = matrix::run(&tiny(), &mut |p| steps.push((p.done, p.total))).unwrap();
    // Progress: counts up to the total, ends at it.
    let (last_done, total) = *steps.last().unwrap();
    assert_eq!(last_done, total);
    assert!(steps.windows(2).all(|w| w[0].0 <= w[1].0));

    // The JSON has the documented fields and reads back.
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "schema",
        "started_utc",
        "elapsed_secs",
        "machine",
        "config",
        "structure",
        "session_size_of",
        "handshakes",
        "records",
        "analysis",
        "samples",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["schema"], matrix::SCHEMA);
    let back: CryptoReport = serde_json::from_value(json).unwrap();
    assert_eq!(back.records.len(), r.records.len());

    // Handshake: one suite, both sides timed, the bytes of docs/protocol.md.
    assert_eq!(r.handshakes.len(), 1);
    let h = &r.handshakes[0];
    assert_eq!(h.suite, "x25519/ed25519/aes256gcm");
    assert!(h.device_us.median > 0.0 && h.gateway_us.median > 0.0);
    assert_eq!(h.device_us.n, 5);
    assert_eq!((h.m1_bytes, h.m2_bytes, h.m3_bytes), (77, 150, 136));
    assert_eq!(h.ack_bytes, 24);
    assert_eq!(h.device_to_gateway_bytes, 77 + 136);
    assert_eq!(h.gateway_to_device_bytes, 150 + 24);

    // Records: two AEADs and the baseline, each at both sizes.
    assert_eq!(r.records.len(), 3);
    assert!(r.records[2].baseline);
    assert_eq!(r.records[2].aead, BASELINE_AEAD_NAME);
    for rec in &r.records {
        assert_eq!(rec.sizes.len(), 2);
        assert_eq!(rec.overhead_bytes, 23);
        assert_eq!(rec.overhead_bytes_max, 29);
        for s in &rec.sizes {
            assert!(s.seal_ns.median > 0.0 && s.open_ns.median > 0.0);
            assert!(s.seal_mb_s > 0.0 && s.open_mb_s > 0.0);
            assert_eq!(s.wire_bytes, s.bytes + 23);
        }
        if std::path::Path::new("/proc/self/statm").exists() {
            assert!(rec.session_rss_bytes.is_some());
        }
    }
    assert!(r.session_size_of > 0);
    assert!(r.records[0].sizes.iter().all(|s| s.raw_seal_mb_s > 0.0));

    // Primitives: 3 key exchanges × (keygen, respond, complete) + 3 signatures × (sign, verify).
    assert_eq!(r.primitives.len(), 15);
    assert!(
        r.primitives
            .iter()
            .all(|p| p.us.median > 0.0 && p.us.n == 5)
    );

    // Samples: both handshake sides and each record row at 1 KiB.
    let kinds: Vec<&str> = r.samples.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "handshake_device").count(),
        1
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "handshake_gateway").count(),
        1
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "record_seal_open").count(),
        3
    );
    assert!(r.samples.iter().all(|s| !s.values.is_empty()));

    // Ciphertext analysis.
    assert_eq!(r.analysis.len(), 3);
    for a in &r.analysis {
        assert!(a.plaintext_entropy < 5.0, "{}", a.plaintext_entropy);
        assert!(a.plaintext_p < 1e-10);
        if a.baseline {
            // No encryption: the "ciphertext" is the plaintext, the tag never changes.
            assert_eq!(a.ciphertext_entropy, a.plaintext_entropy);
            assert_eq!(a.same_nonce_tag_bits_changed, 0.0);
            assert_eq!(a.same_nonce_ciphertext_bits_changed_count, 1.0);
            continue;
        }
        assert!(
            a.ciphertext_entropy > 7.9,
            "{} {}",
            a.aead,
            a.ciphertext_entropy
        );
        assert!(a.ciphertext_entropy > a.plaintext_entropy);
        // Uniform bytes: p is uniform on (0, 1); below 1e-6 would be a one-in-a-million event.
        assert!(a.ciphertext_p > 1e-6, "{} p = {}", a.aead, a.ciphertext_p);
        // Stream modes: one flipped plaintext bit flips exactly one ciphertext bit.
        assert_eq!(
            a.same_nonce_ciphertext_bits_changed_count, 1.0,
            "{}",
            a.aead
        );
        assert!(
            (0.4..0.6).contains(&a.same_nonce_tag_bits_changed),
            "{} tag {}",
            a.aead,
            a.same_nonce_tag_bits_changed
        );
        assert!((0.45..0.55).contains(&a.next_record_ciphertext_bits_changed));
    }

    let mut table = Vec::new();
    r.write_table(&mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("x25519") && table.contains(BASELINE_AEAD_NAME));

    if std::env::var_os("IOTSEAL_BENCH_WRITE_FIXTURE").is_some() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/report-in/crypto.json"
        );
        std::fs::write(path, serde_json::to_string_pretty(&r).unwrap()).unwrap();
    }
}
