//! Writes the seed corpora `fuzz/corpus/<target>/` from real messages: hellos (first and
//! retried), gateway answers, M3 with records, record batches, readings, acknowledgements,
//! the scenario files of `scenarios/`, admin JSON. Deterministic: the same tree gives the same
//! files. Run from the repository root (see fuzz/README.md):
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --features gen-corpus --bin gen-corpus
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use iotseal_fuzz::provider::{FAKE, RUSTCRYPTO};
use iotseal_fuzz::rng::{self, ResettableRandom};
use iotseal_fuzz::setup::{
    self, Kind, NOW, device, device_offers, gateway, ids, record_suite, session_pair,
};
use iotseal_fuzz::targets::{self, RecordInput, WindowOp};
use iotseal_proto::crypto::CryptoProvider;
use iotseal_proto::handshake::{DeviceConfig, HandshakeServer, SuitePolicy};
use iotseal_proto::reading::{Reading, SensorKind, encode_batch};
use iotseal_proto::record::{ContentType, ReplayWindow, Session, ack, batch};
use iotseal_proto::{AeadId, Suite, Time};
use iotseal_test::pair::DeviceDriver;

/// Corpus files of one target, by name.
#[derive(Default)]
struct Corpus(BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>);

impl Corpus {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: Vec<u8>) {
        self.0.entry(target).or_default().insert(name.into(), bytes);
    }
}

fn readings(n: usize, seed: u64) -> Vec<Reading> {
    (0..n as u64)
        .map(|i| Reading {
            msg_id: seed * 1000 + i,
            time_ms: NOW.as_millis() + i * 250,
            values: (0..((seed + i) % 4) as u8)
                .map(|k| (SensorKind::from_code(k + 1), 20.5 + k as f32))
                .collect(),
            extra: vec![0xab; ((seed + i) % 3) as usize * 7],
        })
        .collect()
}

/// Every message of a handshake, as the device engine sent and got them.
struct Flights {
    /// Every hello the device sent.
    hellos: Vec<Vec<u8>>,
    /// Every answer of the gateway (retries, M2).
    answers: Vec<Vec<u8>>,
    /// M3 and the device's session.
    finish: (Vec<u8>, Session),
}

/// Answers the hellos of `device` (started by the engine) on `server` at `gateway_now`
/// until M3.
fn run_handshake(device: DeviceDriver, server: &mut HandshakeServer, gateway_now: Time) -> Flights {
    let d = device.run(server, gateway_now).expect("handshake");
    let (m3, rest) = d.flights.split_last().expect("M3");
    Flights {
        hellos: rest.iter().step_by(2).cloned().collect(),
        answers: rest.iter().skip(1).step_by(2).cloned().collect(),
        finish: (m3.clone(), d.session),
    }
}

fn framed(msgs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        batch::push(&mut out, m);
    }
    out
}

fn data_record(s: &mut Session, n: usize, seed: u64) -> Vec<u8> {
    let mut rec = Vec::new();
    s.seal(
        NOW,
        ContentType::Data,
        &encode_batch(&readings(n, seed)),
        &mut rec,
    )
    .expect("seal");
    rec
}

/// The gateways that answer the gateway_hello seeds draw from their own stream, so the
/// device's draws (its retried hello's nonce) are the same as in the target, where no gateway
/// runs.
static GATEWAY_RNG: ResettableRandom = ResettableRandom::new();

/// hello, hello_macd and gateway_hello seeds on a real provider (RustCrypto device).
fn handshakes_real(c: &mut Corpus) {
    for (v, offers) in device_offers().into_iter().enumerate() {
        // As the gateway_hello target: reset, then the device starts.
        let dev = device(RUSTCRYPTO, Kind::RustCrypto, offers.clone());
        // The device's clock: NOW (as the gateway_hello target's device), or 100 s behind
        // (a clock retry whose second hello the gateway at NOW accepts).
        let behind = Time(NOW.as_millis() - 100_000);
        for (label, gateway_now, device_now, policy) in [
            ("direct", NOW, NOW, SuitePolicy::default()),
            (
                "clock-retry",
                NOW.plus_millis(100_000),
                NOW,
                SuitePolicy::default(),
            ),
            ("slow-device", NOW, behind, SuitePolicy::default()),
            ("keyshare-retry", NOW, NOW, setup::classical_policy()),
        ] {
            if label == "keyshare-retry" && offers.len() < 2 {
                continue;
            }
            rng::reset();
            GATEWAY_RNG.reset();
            let started = DeviceDriver::start(&dev, device_now).expect("start");
            let gw_p = CryptoProvider {
                random: &GATEWAY_RNG,
                ..RUSTCRYPTO
            };
            let mut server = gateway(gw_p, Kind::RustCrypto, policy);
            let f = run_handshake(started, &mut server, gateway_now);
            for (i, h) in f.hellos.iter().enumerate() {
                c.add("hello", format!("m1-v{v}-{label}-{i}"), h.clone());
                c.add("hello_macd", format!("m1-v{v}-{label}-{i}"), h.clone());
            }
            let mut answers: Vec<Vec<u8>> = f.answers.clone();
            // An ack from the gateway's new session.
            let est = server
                .handle_finish(gateway_now, &f.finish.0, &setup::registry(Kind::RustCrypto))
                .expect("finish");
            let mut gw = est.session;
            let mut ack = Vec::new();
            gw.seal_ack(gateway_now, &mut ack).expect("ack");
            answers.push(framed(&[&ack]));
            let refs: Vec<&[u8]> = answers.iter().map(Vec::as_slice).collect();
            if device_now == NOW {
                let mut input = vec![v as u8];
                input.extend(framed(&refs));
                assert!(
                    targets::gateway_hello(&input),
                    "seed real-v{v}-{label} stops early"
                );
                c.add("gateway_hello", format!("real-v{v}-{label}"), input);
            }
        }
    }
}

/// A fake-provider device config with another device id (revoked, PQ-only, unknown).
fn fake_device_with_id(offers: Vec<Suite>, id: &[u8]) -> Arc<DeviceConfig> {
    let mut d = Arc::try_unwrap(device(FAKE, Kind::Fake, offers)).expect("unshared");
    d.device_id = id.to_vec();
    Arc::new(d)
}

/// finish and gateway_hello seeds on the fuzzing provider, exactly as the targets replay them.
fn handshakes_fake(c: &mut Corpus) {
    for (v, offers) in device_offers().into_iter().enumerate() {
        let alg = offers[0].sig;
        let mut ids_for: Vec<(&str, Vec<u8>)> = vec![("own", setup::device_id(alg).to_vec())];
        if v == 0 {
            ids_for.push(("revoked", ids::REVOKED.to_vec()));
            ids_for.push(("pq-only", ids::PQ_ONLY.to_vec()));
            ids_for.push(("unknown", b"dev-nobody".to_vec()));
        }
        for (label, id) in ids_for {
            // As the finish target: reset, gateway, device start, hello.
            rng::reset();
            let mut server = gateway(FAKE, Kind::Fake, SuitePolicy::default());
            let started =
                DeviceDriver::start(&fake_device_with_id(offers.clone(), &id), NOW).expect("start");
            let f = run_handshake(started, &mut server, NOW);
            let (m3, mut dev) = f.finish;
            let mut with_records = m3.clone();
            batch::push(&mut with_records, &data_record(&mut dev, 3, v as u64));
            batch::push(&mut with_records, &data_record(&mut dev, 1, 7));
            let mut input = vec![v as u8];
            input.extend(&m3);
            assert_eq!(
                targets::finish(&input),
                label == "own",
                "seed m3-v{v}-{label}"
            );
            c.add("finish", format!("m3-v{v}-{label}"), input);
            let mut input = vec![v as u8];
            input.extend(&with_records);
            c.add("finish", format!("m3-records-v{v}-{label}"), input);
            c.add(
                "batch",
                format!("m3-records-v{v}-{label}"),
                with_records[m3.len()..].to_vec(),
            );
        }
        // gateway_hello with the fuzzing provider: reset, device start, then a gateway.
        rng::reset();
        let started =
            DeviceDriver::start(&device(FAKE, Kind::Fake, offers.clone()), NOW).expect("start");
        let mut server = gateway(FAKE, Kind::Fake, SuitePolicy::default());
        let f = run_handshake(started, &mut server, NOW);
        let (m3, _) = f.finish;
        let mut gw = server
            .handle_finish(NOW, &m3, &setup::registry(Kind::Fake))
            .expect("finish")
            .session;
        let mut ack = Vec::new();
        gw.seal_ack(NOW, &mut ack).expect("ack");
        let mut input = vec![0x80 | v as u8];
        input.extend(framed(&[&f.answers[0], &framed(&[&ack])]));
        assert!(targets::gateway_hello(&input), "seed fake-v{v} stops early");
        c.add("gateway_hello", format!("fake-v{v}"), input);
    }
}

fn records(c: &mut Corpus) {
    let mut pair = session_pair(FAKE, record_suite(AeadId::Aes256Gcm));
    let recs: Vec<Vec<u8>> = (0..4)
        .map(|i| data_record(&mut pair.device, i + 1, i as u64))
        .collect();
    let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
    c.add("batch", "four-records", framed(&refs));
    c.add("batch", "one-record", framed(&refs[..1]));
    c.add("batch", "empty-record", framed(&[b""]));

    for (i, n) in [1usize, 2, 5, 40].into_iter().enumerate() {
        c.add(
            "reading",
            format!("batch-{n}"),
            encode_batch(&readings(n, i as u64)),
        );
    }
    let odd = vec![
        Reading {
            msg_id: iotseal_proto::codec::VARINT_MAX,
            time_ms: 0,
            values: (0..32)
                .map(|k| (SensorKind::from_code(k), f32::NAN))
                .collect(),
            extra: vec![],
        },
        Reading {
            msg_id: 63,
            time_ms: 16383,
            values: vec![
                (SensorKind::Other(200), -0.0),
                (SensorKind::Battery, f32::INFINITY),
            ],
            extra: vec![1; 300],
        },
    ];
    c.add("reading", "edges", encode_batch(&odd));

    // Acks: from windows with gaps, as `seal_ack` builds them.
    let patterns: [&[u64]; 5] = [
        &[0],
        &[0, 1, 2, 5, 7, 8],
        &[3, 64, 65, 66, 1000, 1500],
        &[10_000, 10_002, 10_004, 10_006],
        &[],
    ];
    for (i, p) in patterns.iter().enumerate() {
        let mut w = ReplayWindow::new();
        for &s in p.iter() {
            w.mark(s).expect("mark");
        }
        let mut out = Vec::new();
        ack::encode(w.ranges(ack::MAX_ACK_RANGES), &mut out);
        c.add("ack", format!("window-{i}"), out);
    }
    let mut many = ReplayWindow::new();
    for s in (0..200).step_by(2) {
        many.mark(s).expect("mark");
    }
    let mut out = Vec::new();
    ack::encode(many.ranges(ack::MAX_ACK_RANGES), &mut out);
    c.add("ack", "window-32-ranges", out);
}

/// Seeds for the `arbitrary` targets: deterministic byte strings whose decoded operation
/// lists are long enough to be interesting.
fn structured(c: &mut Corpus) {
    rng::reset();
    let p: CryptoProvider = FAKE;
    let bytes = |n: usize| {
        let mut b = vec![0u8; n];
        p.random.fill(&mut b).expect("fill");
        b
    };
    let mut record_seeds = 0;
    let mut window_seeds = 0;
    for i in 0..4000 {
        let b = bytes(64 + (i % 8) * 64);
        if record_seeds < 16
            && let Ok(input) = RecordInput::arbitrary_take_rest(Unstructured::new(&b))
            && input.ops.len() >= 4
        {
            c.add("record_open", format!("ops-{record_seeds:02}"), b.clone());
            record_seeds += 1;
            continue;
        }
        if window_seeds < 16
            && let Ok(ops) = Vec::<WindowOp>::arbitrary_take_rest(Unstructured::new(&b))
            && ops.len() >= 8
        {
            c.add("replay_window", format!("ops-{window_seeds:02}"), b);
            window_seeds += 1;
        }
    }
}

fn files(c: &mut Corpus, root: &Path) {
    let mut entries: Vec<PathBuf> = fs::read_dir(root.join("scenarios"))
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        c.add("scenario", name, fs::read(&p).expect("read"));
    }
    c.add(
        "scenario",
        "small.toml",
        b"seed = 1\nduration_secs = 5\n\n[network]\nlatency_ms = 20\njitter_ms = 5\n\
          drop_request = 0.1\ndrop_response = 0.05\ndisconnect = 0.01\n\n[[group]]\n\
          name = \"a\"\ndevices = 2\nsuite = \"x25519/ed25519/aes128gcm\"\n\
          sensors = [\"temperature\", \"gps\", \"accelerometer\", \"power_meter\"]\n\
          rate_hz = 0.5\nbatch = 3\npayload_extra = 16\nprovider = \"aws-lc\"\n"
            .to_vec(),
    );

    let rows: Vec<String> = readings(3, 9)
        .iter()
        .map(|r| {
            let mut b = Vec::new();
            r.encode(&mut b);
            format!(
                "{{\"device_id\":\"dev-1\",\"msg_id\":\"{}\",\"device_time_ms\":{},\"received_ms\":{},\
                 \"payload_hex\":\"{}\",\"values\":[[\"temperature\",20.5],[\"power\",\"NaN\"]]}}",
                r.msg_id,
                r.time_ms,
                r.time_ms + 40,
                hex::encode(b)
            )
        })
        .collect();
    let arr = format!("[{}]", rows.join(","));
    c.add(
        "admin_json",
        "readings-array.json",
        arr.clone().into_bytes(),
    );
    c.add(
        "admin_json",
        "readings-object.json",
        format!("{{\"readings\":{arr},\"next_from\":null}}").into_bytes(),
    );
    c.add(
        "admin_json",
        "devices.json",
        b"[{\"id\":\"dev-1\",\"alg\":\"ed25519\",\"public_key\":\"00ff\",\"key_id\":\"0011223344556677\",\
          \"revoked\":false,\"created_ms\":1767225600000,\"last_seen_ms\":null,\"active_sessions\":0,\
          \"handshakes\":1,\"records_accepted\":2,\"readings\":3}]"
            .to_vec(),
    );
    c.add("admin_json", "alg.json", b"\"ed25519+mldsa65\"".to_vec());
    c.add(
        "admin_json",
        "error.json",
        b"{\"error\":\"unknown device\"}".to_vec(),
    );
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut c = Corpus::default();
    handshakes_real(&mut c);
    handshakes_fake(&mut c);
    records(&mut c);
    structured(&mut c);
    files(&mut c, &root);

    for (target, files) in &c.0 {
        let dir = out.join(target);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        let mut total = 0;
        for (name, bytes) in files {
            // Every seed must pass its own target (a seed that crashes is a finding, not a seed).
            targets::run(target, bytes);
            fs::write(dir.join(name), bytes).expect("write");
            total += bytes.len();
        }
        println!("{target:>14}: {:3} files, {total:7} bytes", files.len());
    }
}
