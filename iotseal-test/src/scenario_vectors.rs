//! Scenario vectors (docs/vectors/{key-update,retry,ack,close}.json): whole sessions beyond the
//! per-suite vectors of [`crate::protocol_vectors`]: retries of both kinds, key updates in both
//! directions, a multi-range acknowledgement with retransmissions and a replay, and a Close
//! record with what follows (the session dropped). Generated with the rustcrypto provider from
//! recorded seeded randomness and Ed25519 identities (deterministic signatures, so every output
//! of both ends is reproducible byte for byte from the recorded inputs), and checked with any
//! provider on both ends: each end only ever consumes the *recorded* bytes of the other end, and
//! must produce its own recorded bytes.
//!
//! A file is `{scenario, description, generator, cases: [case…]}`; each case is a complete,
//! self-contained session: identities, both clocks, the handshake messages with every input
//! that went into them (ephemeral keys as ML-KEM seeds, nonces, the gateway's random draws,
//! the retry cookie key), then a script of steps (records, key updates, late or repeated
//! deliveries, session ends), each with its bytes and what the receiver makes of it. protocol.md §14
//! describes the fields.

use std::collections::HashMap;
use std::sync::Mutex;

use iotseal_proto::crypto::{CryptoProvider, Secret, SecureRandom};
use iotseal_proto::handshake::SourceKey;
use iotseal_proto::handshake::messages::{
    Cookie, GatewayHello, Hello, RetryReason, SOURCE_KEY_LEN,
};
use iotseal_proto::handshake::{
    DeviceConfig, DeviceHandshake, DeviceNext, GatewayConfig, GatewayIdentity, HandshakeServer,
    HelloReply, PinnedKey, RegisteredDevice, SuitePolicy, key_id,
};
use iotseal_proto::reading::{Reading, SensorKind, decode_batch, encode_batch};
use iotseal_proto::record::{ContentType, Header, Session};
use iotseal_proto::{Error, KemId, SigAlg, Suite, Time};
use serde_json::{Map, Value, json};

use crate::pair::{MapRegistry, T0};
use crate::protocol_vectors::{
    ephemeral_draw_len, ephemeral_draws, ephemeral_fields, h, replay_provider,
};
use crate::rng::{FixedRandom, SeededRandom};

/// The scenario files, without `.json`.
pub const SCENARIOS: [&str; 4] = ["key-update", "retry", "ack", "close"];

/// The file name of a scenario's vectors.
pub fn file_name(scenario: &str) -> String {
    format!("{scenario}.json")
}

/// The default suite (hybrid PQ key exchange, Ed25519).
const DEFAULT: Suite = Suite::DEFAULT;
/// The classical suite of the scenarios.
const CLASSICAL: &str = "x25519/ed25519/aes256gcm";
/// The device identifier of every case.
const DEVICE_ID: &[u8] = b"sensor-0001";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    Device,
    Gateway,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Gateway => "gateway",
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "device" => Ok(Self::Device),
            "gateway" => Ok(Self::Gateway),
            _ => Err(format!("unknown side {s:?}")),
        }
    }

    fn peer(self) -> Self {
        match self {
            Self::Device => Self::Gateway,
            Self::Gateway => Self::Device,
        }
    }
}

fn type_name(ct: ContentType) -> &'static str {
    match ct {
        ContentType::Data => "data",
        ContentType::Ack => "ack",
        ContentType::Close => "close",
        _ => "unknown",
    }
}

fn parse_type(s: &str) -> Result<ContentType, String> {
    match s {
        "data" => Ok(ContentType::Data),
        "ack" => Ok(ContentType::Ack),
        "close" => Ok(ContentType::Close),
        _ => Err(format!("unknown content type {s:?}")),
    }
}

/// One scripted action after the handshake. Step `i` (from 0) happens at gateway clock
/// `T0 + (i + 1) s` on both ends.
enum Step {
    /// `from` seals a record: Data carries a batch of the readings `readings` (message ids),
    /// Close an empty payload, Ack the sender's window (`seal_ack`). The peer receives it at
    /// once unless it is lost (`delivered: false`).
    Record {
        from: Side,
        ct: ContentType,
        readings: Vec<u64>,
        delivered: bool,
    },
    /// `side` moves its sending key to the next epoch (`update_send_key`).
    KeyUpdate(Side),
    /// `side` drops the session (the gateway server does after acknowledging a Close,
    /// §8.10): a record of it that reaches `side` later is refused UnknownSession.
    EndSession(Side),
    /// A record `from` sealed earlier, with sequence number `seq`, reaches the peer (late,
    /// resent with the same bytes, or replayed).
    Deliver { from: Side, seq: u64 },
}

fn data(readings: &[u64]) -> Step {
    Step::Record {
        from: Side::Device,
        ct: ContentType::Data,
        readings: readings.to_vec(),
        delivered: true,
    }
}

fn lost_data(readings: &[u64]) -> Step {
    Step::Record {
        from: Side::Device,
        ct: ContentType::Data,
        readings: readings.to_vec(),
        delivered: false,
    }
}

fn ack() -> Step {
    Step::Record {
        from: Side::Gateway,
        ct: ContentType::Ack,
        readings: Vec::new(),
        delivered: true,
    }
}

fn lost_ack() -> Step {
    Step::Record {
        from: Side::Gateway,
        ct: ContentType::Ack,
        readings: Vec::new(),
        delivered: false,
    }
}

fn close() -> Step {
    Step::Record {
        from: Side::Device,
        ct: ContentType::Close,
        readings: Vec::new(),
        delivered: true,
    }
}

/// One case: a handshake, then the steps.
struct CaseSpec {
    name: &'static str,
    description: &'static str,
    /// The device's offers, most preferred first (all Ed25519).
    offers: Vec<Suite>,
    /// The gateway's suite policy.
    policy: SuitePolicy,
    /// The device's clock minus the gateway's during the handshake, in seconds.
    device_clock_offset_secs: i64,
    /// The source key the transport gives with the hellos, for a gateway under load (its
    /// cookie threshold 0: the first hello gets Retry(Address)); `None`: no source, no load.
    source: Option<[u8; SOURCE_KEY_LEN]>,
    steps: Vec<Step>,
    /// Seeds every key and random draw of the case.
    seed: u64,
}

/// Reading `id` of the scenarios: taken at `T0 + id s`, one temperature `20 + id / 4` °C.
fn reading(id: u64) -> Reading {
    Reading {
        msg_id: id,
        time_ms: T0.0 + 1000 * id,
        values: vec![(SensorKind::Temperature, 20.0 + id as f32 / 4.0)],
        extra: Vec::new(),
    }
}

fn readings_batch(ids: &[u64]) -> Vec<u8> {
    encode_batch(&ids.iter().map(|&i| reading(i)).collect::<Vec<_>>())
}

fn classical() -> Suite {
    CLASSICAL.parse().unwrap()
}

fn specs(scenario: &str) -> Vec<CaseSpec> {
    let both = [DEFAULT, classical()];
    match scenario {
        "key-update" => both
            .iter()
            .enumerate()
            .map(|(i, &s)| CaseSpec {
                name: if i == 0 {
                    "key updates, default suite"
                } else {
                    "key updates, classical suite"
                },
                description: "Both ends update their sending keys (update_send_key, as the \
                    automatic policy of §8.5 would after rekey_after_records/bytes/secs). Device \
                    to gateway: Data at epoch 0, one update, Data at epoch 1 (the gateway \
                    follows when one authenticates), an update to epoch 2 while a record of \
                    epoch 1 is still on its way (it arrives after the first epoch-2 record and \
                    opens with the previous key, in the grace period), then two updates before \
                    the next record (the gateway jumps from epoch 2 to 4). Gateway to device: \
                    acks at epoch 0, one update, acks at epoch 1, two updates, an ack at \
                    epoch 3 (the device jumps from 1 to 3).",
                offers: vec![s],
                policy: SuitePolicy::default(),
                device_clock_offset_secs: 0,
                source: None,
                steps: vec![
                    ack(),
                    data(&[1]),
                    ack(),
                    Step::KeyUpdate(Side::Device),
                    data(&[2]),
                    data(&[3]),
                    ack(),
                    Step::KeyUpdate(Side::Gateway),
                    ack(),
                    lost_data(&[4]),
                    Step::KeyUpdate(Side::Device),
                    data(&[5]),
                    Step::Deliver {
                        from: Side::Device,
                        seq: 3,
                    },
                    ack(),
                    Step::KeyUpdate(Side::Device),
                    Step::KeyUpdate(Side::Device),
                    data(&[6]),
                    Step::KeyUpdate(Side::Gateway),
                    Step::KeyUpdate(Side::Gateway),
                    ack(),
                ],
                seed: 0x6b75_0000 + i as u64,
            })
            .collect(),
        "retry" => vec![
            CaseSpec {
                name: "clock retry, default suite",
                description: "The device's clock is 3600 s behind: its hello is out of the 30 s \
                    skew, the gateway answers Retry(Clock) with its time and the chosen suite; \
                    the device sends the retried hello with the hinted time, the same \
                    ephemeral key and a fresh nonce, verifies M2, adopts the gateway's time (the \
                    round trip on its own clock is 0) and runs the session on it.",
                offers: vec![DEFAULT],
                policy: SuitePolicy::default(),
                device_clock_offset_secs: -3600,
                source: None,
                steps: vec![ack(), data(&[1]), ack()],
                seed: 0x7274_0000,
            },
            CaseSpec {
                name: "clock retry, classical suite",
                description: "As the default-suite clock retry, with x25519.",
                offers: vec![classical()],
                policy: SuitePolicy::default(),
                device_clock_offset_secs: -3600,
                source: None,
                steps: vec![ack(), data(&[1]), ack()],
                seed: 0x7274_0001,
            },
            CaseSpec {
                name: "key-share retry, classical first offer, gateway requires PQ",
                description: "The device offers x25519/ed25519/aes256gcm first and the default \
                    suite second, with an X25519 share; the gateway requires a PQ key exchange \
                    (require_pq_kem), chooses the default suite and answers Retry(KeyShare) \
                    naming it; the device sends the retried hello (same offers) with a fresh \
                    x25519mlkem768 ephemeral key and nonce, and the handshake completes with \
                    the default suite.",
                offers: vec![classical(), DEFAULT],
                policy: SuitePolicy {
                    require_pq_kem: true,
                    ..SuitePolicy::default()
                },
                device_clock_offset_secs: 0,
                source: None,
                steps: vec![ack(), data(&[1]), ack()],
                seed: 0x7274_0002,
            },
            CaseSpec {
                name: "address retry under load, default suite",
                description: "The gateway is under load (its half-open table past the cookie \
                    threshold; the generator sets the threshold to 0) and the transport gives \
                    the hello's source key (`source`: 192.0.2.1 as an IPv4-mapped address). \
                    The gateway answers Retry(Address): the cookie's tag covers the source, \
                    its suite is the chosen one and its time the gateway's. The device sends \
                    the retried hello with the hinted time, the same ephemeral key and a fresh \
                    nonce; the gateway checks the cookie against the same source and admits it.",
                offers: vec![DEFAULT],
                policy: SuitePolicy::default(),
                device_clock_offset_secs: 0,
                source: Some(SourceKey::from_ip([192, 0, 2, 1].into()).0),
                steps: vec![ack(), data(&[1]), ack()],
                seed: 0x7274_0003,
            },
            CaseSpec {
                name: "address retry under load, fixing clock and key share at once",
                description: "Under load, from the source 2001:db8:1:2::/64 (an IPv6 address \
                    masked to its /64), a device whose clock is 3600 s behind offers \
                    x25519/ed25519/aes256gcm first and the default suite second, with an \
                    X25519 share; the gateway requires a PQ key exchange. One Retry(Address) \
                    names the default suite and carries the gateway's time: the retried hello \
                    has the hinted time and a fresh x25519mlkem768 key, so no Clock or \
                    KeyShare retry is needed (one retry per handshake).",
                offers: vec![classical(), DEFAULT],
                policy: SuitePolicy {
                    require_pq_kem: true,
                    ..SuitePolicy::default()
                },
                device_clock_offset_secs: -3600,
                source: Some(
                    SourceKey::from_ip(
                        "2001:db8:1:2:aaaa:bbbb:cccc:dddd"
                            .parse::<std::net::IpAddr>()
                            .unwrap(),
                    )
                    .0,
                ),
                steps: vec![ack(), data(&[1]), ack()],
                seed: 0x7274_0004,
            },
        ],
        "ack" => both
            .iter()
            .enumerate()
            .map(|(i, &s)| CaseSpec {
                name: if i == 0 {
                    "multi-range acknowledgements, default suite"
                } else {
                    "multi-range acknowledgements, classical suite"
                },
                description: "The device sends Data records 0 … 9 (one reading each, ids 1 … \
                    10); 3, 4, 7 and 8 are lost. The gateway's ack names three ranges, highest \
                    first: (9, 9), (5, 6), (0, 2), payload 03 09 09 05 06 00 02. The device \
                    resends record 3 with the same bytes and seals the readings of records 4, \
                    7 and 8 again in one new record, 10 (§9.2); the ack is (9, 10), (5, 6), \
                    (0, 3). A copy of record 5 then arrives again (a replay): it is refused \
                    before decryption and answered with an ack built from the window alone, \
                    the same ranges (§8.9).",
                offers: vec![s],
                policy: SuitePolicy::default(),
                device_clock_offset_secs: 0,
                source: None,
                steps: {
                    let mut v = vec![ack()];
                    for id in 1..=10u64 {
                        let seq = id - 1;
                        v.push(if [3, 4, 7, 8].contains(&seq) {
                            lost_data(&[id])
                        } else {
                            data(&[id])
                        });
                    }
                    v.push(ack());
                    v.push(Step::Deliver {
                        from: Side::Device,
                        seq: 3,
                    });
                    v.push(data(&[5, 8, 9]));
                    v.push(ack());
                    v.push(Step::Deliver {
                        from: Side::Device,
                        seq: 5,
                    });
                    v.push(ack());
                    v
                },
                seed: 0x6163_0000 + i as u64,
            })
            .collect(),
        "close" => vec![
            CaseSpec {
                name: "device closes, default suite",
                description: "The device sends one Data record, then a Close record (content \
                    type 2, empty payload). The gateway opens it like any record, marks it, and \
                    its ack names it: (0, 1). Then it removes the session (§8.10 steps 3 and 4), \
                    and the device, whose Close is acknowledged, drops it too.",
                offers: vec![DEFAULT],
                policy: SuitePolicy::default(),
                device_clock_offset_secs: 0,
                source: None,
                steps: vec![
                    ack(),
                    data(&[1]),
                    close(),
                    ack(),
                    Step::EndSession(Side::Gateway),
                    Step::EndSession(Side::Device),
                ],
                seed: 0x636c_0000,
            },
            CaseSpec {
                name: "device closes, the ack is lost, default suite",
                description: "As before, but the ack naming the Close is lost. The gateway \
                    has removed the session, so when the device resends the Close (the same \
                    bytes, §9.2) it is refused UnknownSession (4; HTTP 404, §18.8) instead of \
                    being answered with an ack: the device handshakes again to send more.",
                offers: vec![DEFAULT],
                policy: SuitePolicy::default(),
                device_clock_offset_secs: 0,
                source: None,
                steps: vec![
                    ack(),
                    data(&[1]),
                    close(),
                    lost_ack(),
                    Step::EndSession(Side::Gateway),
                    Step::Deliver {
                        from: Side::Device,
                        seq: 1,
                    },
                ],
                seed: 0x636c_0002,
            },
            CaseSpec {
                name: "device closes, classical suite",
                description: "As the first case, with x25519.",
                offers: vec![classical()],
                policy: SuitePolicy::default(),
                device_clock_offset_secs: 0,
                source: None,
                steps: vec![
                    ack(),
                    data(&[1]),
                    close(),
                    ack(),
                    Step::EndSession(Side::Gateway),
                    Step::EndSession(Side::Device),
                ],
                seed: 0x636c_0001,
            },
        ],
        other => panic!("unknown scenario {other}"),
    }
}

fn scenario_description(scenario: &str) -> &'static str {
    match scenario {
        "key-update" => "Key updates in both directions (protocol.md §8.5).",
        "retry" => {
            "Handshakes with a Retry: Clock, KeyShare and Address (protocol.md §4.2, §7.2, §7.3)."
        }
        "ack" => {
            "Multi-range acknowledgements, retransmission and a replay (protocol.md §8.8, §8.9, §9.2)."
        }
        "close" => "A Close record and what follows (protocol.md §8.10).",
        _ => "",
    }
}

/// A random source that records what it hands out.
#[derive(Debug)]
struct Recorder {
    inner: SeededRandom,
    log: Mutex<Vec<u8>>,
}

impl Recorder {
    fn new(seed: u64) -> &'static Self {
        Box::leak(Box::new(Self {
            inner: SeededRandom::new(seed),
            log: Mutex::new(Vec::new()),
        }))
    }

    fn drawn(&self) -> Vec<u8> {
        self.log.lock().unwrap().clone()
    }
}

impl SecureRandom for Recorder {
    fn fill(&self, dest: &mut [u8]) -> Result<(), iotseal_proto::crypto::CryptoError> {
        self.inner.fill(dest)?;
        self.log.lock().unwrap().extend_from_slice(dest);
        Ok(())
    }
}

fn policy_json(p: &SuitePolicy) -> Value {
    json!({
        "allowed": p.allowed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "require_pq_kem": p.require_pq_kem,
        "require_pq_sig": p.require_pq_sig,
    })
}

fn parse_policy(v: &Value) -> Result<SuitePolicy, String> {
    let allowed = v["allowed"]
        .as_array()
        .ok_or("gateway_policy.allowed")?
        .iter()
        .map(|s| {
            s.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad suite {s}"))
        })
        .collect::<Result<Vec<Suite>, _>>()?;
    Ok(SuitePolicy {
        allowed,
        require_pq_kem: v["require_pq_kem"].as_bool().ok_or("require_pq_kem")?,
        require_pq_sig: v["require_pq_sig"].as_bool().ok_or("require_pq_sig")?,
    })
}

fn device_config(
    p: CryptoProvider,
    offers: &[Suite],
    id: &[u8],
    private: &[u8],
    gw_public: &[u8],
) -> Result<DeviceConfig, String> {
    let sig = offers[0].sig;
    let key = p
        .signature(sig)
        .and_then(|s| s.load(private))
        .map_err(|e| format!("device key: {e}"))?;
    let mut c = DeviceConfig::new(
        p,
        id.to_vec(),
        key,
        vec![PinnedKey {
            alg: sig,
            public_key: gw_public.to_vec(),
        }],
    );
    c.offers = offers.to_vec();
    Ok(c)
}

/// A gateway configuration: `identity` (provider `p` loads it), `random` as the random source
/// of the handshake, a fixed cookie key and `policy`.
fn gateway_config(
    p: CryptoProvider,
    sig: SigAlg,
    private: &[u8],
    random: &'static dyn SecureRandom,
    cookie_secret: &[u8],
    policy: SuitePolicy,
) -> Result<GatewayConfig, String> {
    let key = p
        .signature(sig)
        .and_then(|s| s.load(private))
        .map_err(|e| format!("gateway key: {e}"))?;
    let mut c = GatewayConfig::new(p, vec![GatewayIdentity::new(&p, key)])
        .map_err(|e| format!("gateway config: {e}"))?;
    c.provider = CryptoProvider { random, ..p };
    c.cookie_secret = Secret::from_slice(cookie_secret);
    c.policy = policy;
    Ok(c)
}

fn registry(sig: SigAlg, id: &[u8], public: &[u8]) -> MapRegistry {
    let r = MapRegistry::default();
    r.insert(
        id,
        RegisteredDevice {
            alg: sig,
            public_key: public.to_vec(),
            revoked: false,
            policy: None,
        },
    );
    r
}

fn offset(t: Time, secs: i64) -> Time {
    Time((t.0 as i64 + secs * 1000) as u64)
}

fn step_time(i: usize) -> Time {
    T0.plus_millis(1000 * (i as u64 + 1))
}

/// Generates a scenario file with the rustcrypto provider.
pub fn generate(scenario: &str) -> Value {
    let cases: Vec<Value> = specs(scenario).iter().map(generate_case).collect();
    json!({
        "scenario": scenario,
        "description": scenario_description(scenario),
        "generator": "iotseal-test scenario_vectors::generate (rustcrypto provider, SeededRandom)",
        "cases": cases,
    })
}

fn generate_case(spec: &CaseSpec) -> Value {
    let base = iotseal_crypto_rustcrypto::default_provider();
    let seed = spec.seed;
    let sig = spec.offers[0].sig;
    let dkey = base
        .signature(sig)
        .unwrap()
        .generate(&SeededRandom::new(seed ^ 0x1d))
        .unwrap();
    let gkey = base
        .signature(sig)
        .unwrap()
        .generate(&SeededRandom::new(seed ^ 0x19))
        .unwrap();
    let mut cookie_secret = [0u8; 32];
    SeededRandom::new(seed ^ 0xc0)
        .fill(&mut cookie_secret)
        .unwrap();
    let gw_clock = T0;
    let dev_clock = offset(T0, spec.device_clock_offset_secs);

    let dev_random = Recorder::new(seed ^ 0xd);
    let gw_random = Recorder::new(seed ^ 0x9);
    let device = device_config(
        CryptoProvider {
            random: dev_random,
            ..base
        },
        &spec.offers,
        DEVICE_ID,
        dkey.private_bytes().as_bytes(),
        &gkey.public_key(),
    )
    .unwrap();
    let mut gc = gateway_config(
        base,
        sig,
        gkey.private_bytes().as_bytes(),
        gw_random,
        &cookie_secret,
        spec.policy.clone(),
    )
    .unwrap();
    let source = spec.source.map(SourceKey);
    if source.is_some() {
        gc.cookie_threshold = 0;
    }
    let mut server = HandshakeServer::new(gc);
    let reg = registry(sig, DEVICE_ID, &dkey.public_key());

    // The handshake, recording every message.
    let (mut hs, m1) = DeviceHandshake::start(std::sync::Arc::new(device), dev_clock).unwrap();
    let mut hellos = vec![(m1.clone(), spec.offers[0].kem, false)];
    let mut retry_flight: Option<Value> = None;
    let mut hello = m1;
    let (est, m2, gateway_draws) = loop {
        let before = gw_random.drawn().len();
        match hello_from(&mut server, gw_clock, &hello, source).unwrap() {
            HelloReply::Retry { reason, bytes, .. } => {
                let cookie = Cookie::from_retry_message(&bytes).unwrap();
                retry_flight = Some(json!({
                    "message": "retry",
                    "reason": reason_name(reason),
                    "bytes": h(&bytes),
                }));
                let DeviceNext::Retry {
                    handshake,
                    hello: h1,
                } = hs.handle(dev_clock, &bytes).unwrap()
                else {
                    panic!("no retried hello")
                };
                let prev_kem = hellos.last().unwrap().1;
                hellos.push((h1.clone(), cookie.suite.kem, cookie.suite.kem == prev_kem));
                hs = handshake;
                hello = h1;
            }
            HelloReply::GatewayHello { bytes, .. } => {
                let drawn = gw_random.drawn()[before..].to_vec();
                let DeviceNext::Established(est) = hs.handle(dev_clock, &bytes).unwrap() else {
                    panic!("a second retry")
                };
                break (est, bytes, drawn);
            }
        }
    };
    assert!(hellos.len() <= 2);
    let mut g = Some(
        server
            .handle_finish(gw_clock, &est.finish, &reg)
            .unwrap()
            .session,
    );

    // The device's draws, cut into the hellos' ephemeral keys and nonces.
    let drawn = dev_random.drawn();
    let mut pos = 0;
    let mut take = |n: usize| {
        let b = drawn[pos..pos + n].to_vec();
        pos += n;
        b
    };
    let mut hello_flights = Vec::new();
    let mut last_eph: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut answered_private = Vec::new();
    for (bytes, kem, reused) in &hellos {
        let (draws, private) = if *reused {
            last_eph.clone().unwrap()
        } else {
            let draws = take(ephemeral_draw_len(*kem));
            let private = base
                .kem(*kem)
                .unwrap()
                .start(&FixedRandom::new(draws.clone()))
                .unwrap()
                .dangerous_private_bytes()
                .unwrap()
                .as_bytes()
                .to_vec();
            (draws, private)
        };
        let nonce = take(16);
        let mut f = Map::new();
        f.insert("message".into(), json!("m1"));
        f.insert("kem".into(), json!(kem.to_string()));
        f.insert("ephemeral_reused".into(), json!(reused));
        ephemeral_fields(*kem, "ephemeral_", &draws, &private, &mut f);
        f.insert("nonce".into(), h(&nonce));
        f.insert("bytes".into(), h(bytes));
        assert_eq!(Hello::decode(bytes).unwrap().nonce[..], nonce[..]);
        hello_flights.push(Value::Object(f));
        answered_private = private.clone();
        last_eph = Some((draws, private));
    }
    assert_eq!(
        pos,
        drawn.len(),
        "the device drew only ephemeral keys and nonces"
    );
    let gh = GatewayHello::decode(&m2).unwrap();
    let shared = base
        .kem(gh.suite.kem)
        .unwrap()
        .dangerous_import_ephemeral(&answered_private)
        .unwrap()
        .complete(gh.share)
        .unwrap();
    let mut handshake = vec![hello_flights[0].clone()];
    if let Some(retry) = retry_flight {
        handshake.push(retry);
        handshake.push(hello_flights[1].clone());
    }
    handshake.push(json!({
        "message": "m2",
        "session_id": h(&gh.session_id.to_be_bytes()),
        "gateway_random": h(&gateway_draws),
        "shared_secret": h(shared.as_bytes()),
        "bytes": h(&m2),
    }));
    handshake.push(json!({"message": "m3", "bytes": h(&est.finish)}));
    let adopted = est.gateway_time;
    let mut dev = Some(est.session);

    // The steps.
    let mut sent: HashMap<(Side, u64), Sent> = HashMap::new();
    let mut steps = Vec::new();
    for (i, step) in spec.steps.iter().enumerate() {
        let t = step_time(i);
        match step {
            Step::EndSession(side) => {
                *pick(&mut dev, &mut g, *side) = None;
                steps.push(json!({
                    "step": "end_session",
                    "side": side.name(),
                    "time_ms": t.0,
                }));
            }
            Step::KeyUpdate(side) => {
                let s = pick(&mut dev, &mut g, *side).as_mut().unwrap();
                s.update_send_key(t).unwrap();
                steps.push(json!({
                    "step": "key_update",
                    "side": side.name(),
                    "time_ms": t.0,
                    "send_epoch": s.epochs().0,
                }));
            }
            Step::Record {
                from,
                ct,
                readings,
                delivered,
            } => {
                let s = pick(&mut dev, &mut g, *from).as_mut().unwrap();
                let mut rec = Vec::new();
                let plaintext = match ct {
                    ContentType::Data => readings_batch(readings),
                    ContentType::Ack => {
                        let mut p = Vec::new();
                        iotseal_proto::record::ack::encode(
                            s.window()
                                .ranges(iotseal_proto::record::ack::MAX_ACK_RANGES),
                            &mut p,
                        );
                        p
                    }
                    _ => Vec::new(),
                };
                let seq = if *ct == ContentType::Ack {
                    s.seal_ack(t, &mut rec).unwrap()
                } else {
                    s.seal(t, *ct, &plaintext, &mut rec).unwrap()
                };
                let mut o = Map::new();
                o.insert("step".into(), json!("record"));
                o.insert("from".into(), json!(from.name()));
                o.insert("type".into(), json!(type_name(*ct)));
                o.insert("time_ms".into(), json!(t.0));
                o.insert("seq".into(), json!(seq));
                o.insert("epoch".into(), json!(s.epochs().0));
                o.insert("plaintext".into(), h(&plaintext));
                if *ct == ContentType::Data {
                    o.insert("readings".into(), json!(readings));
                }
                if *ct == ContentType::Ack {
                    let ranges = iotseal_proto::record::ack::decode(&plaintext).unwrap();
                    o.insert(
                        "ranges".into(),
                        json!(ranges.iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>()),
                    );
                }
                o.insert("record".into(), h(&rec));
                o.insert("delivered".into(), json!(delivered));
                if *delivered {
                    let r = pick(&mut dev, &mut g, from.peer());
                    let (result, epoch) = receive(r, t, &rec, *ct, &plaintext).unwrap();
                    o.insert("result".into(), json!(result));
                    if let Some(e) = epoch {
                        o.insert("receiver_epoch".into(), json!(e));
                    }
                }
                sent.insert(
                    (*from, seq),
                    Sent {
                        ct: *ct,
                        plaintext,
                        record: rec,
                    },
                );
                steps.push(Value::Object(o));
            }
            Step::Deliver { from, seq } => {
                let s = &sent[&(*from, *seq)];
                let r = pick(&mut dev, &mut g, from.peer());
                let (result, epoch) = receive(r, t, &s.record, s.ct, &s.plaintext).unwrap();
                let mut o = json!({
                    "step": "deliver",
                    "from": from.name(),
                    "seq": seq,
                    "record": h(&s.record),
                    "time_ms": t.0,
                    "result": result,
                });
                if let Some(e) = epoch {
                    o["receiver_epoch"] = json!(e);
                }
                steps.push(o);
            }
        }
    }

    let suite = gh.suite;
    let mut gateway = json!({
        "private_key": h(gkey.private_bytes().as_bytes()),
        "public_key": h(&gkey.public_key()),
        "key_id": h(&key_id(&base, sig, &gkey.public_key())),
    });
    if handshake.len() > 3 {
        gateway["cookie_secret"] = h(&cookie_secret);
    }
    let mut case = json!({
        "name": spec.name,
        "description": spec.description,
        "suite": suite.to_string(),
        "offers": spec.offers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "gateway_policy": policy_json(&spec.policy),
        "device": {
            "id": h(DEVICE_ID),
            "private_key": h(dkey.private_bytes().as_bytes()),
            "public_key": h(&dkey.public_key()),
        },
        "gateway": gateway,
        "device_clock_ms": dev_clock.0,
        "gateway_clock_ms": gw_clock.0,
        "adopted_time_ms": adopted.map(|t| t.0),
        "handshake": handshake,
        "steps": steps,
    });
    if let Some(s) = spec.source {
        case["source"] = h(&s);
    }
    case
}

/// The name of a retry reason in the files.
fn reason_name(r: RetryReason) -> &'static str {
    match r {
        RetryReason::Clock => "clock",
        RetryReason::KeyShare => "key_share",
        RetryReason::Address => "address",
    }
}

/// A hello handled as from `source` if the case names one, else as from no source.
fn hello_from(
    server: &mut HandshakeServer,
    now: Time,
    hello: &[u8],
    source: Option<SourceKey>,
) -> Result<HelloReply, Error> {
    match source {
        Some(s) => server.handle_hello_from(now, hello, s, &|_| false),
        None => server.handle_hello(now, hello, &|_| false),
    }
}

fn pick<'a>(
    dev: &'a mut Option<Session>,
    gw: &'a mut Option<Session>,
    side: Side,
) -> &'a mut Option<Session> {
    match side {
        Side::Device => dev,
        Side::Gateway => gw,
    }
}

/// The receiver's part of a delivered record: open; if it opens, check it and accept it (mark
/// it in the window; an ack is parsed first, as the device does). Returns `"accepted"`,
/// `"replay"` (refused as already marked or below the window, before decryption) or
/// `"unknown_session"` (the receiver dropped the session the header names) and the receiver's
/// epoch afterwards, if it has the session; any other refusal is an error.
fn receive(
    r: &mut Option<Session>,
    t: Time,
    rec: &[u8],
    ct: ContentType,
    plaintext: &[u8],
) -> Result<(&'static str, Option<u64>), String> {
    let Some(r) = r else {
        Header::peek_session_id(rec).map_err(|e| format!("header: {e}"))?;
        return Ok(("unknown_session", None));
    };
    let mut buf = rec.to_vec();
    let o = match r.open(t, &mut buf) {
        Ok(o) => o,
        Err(Error::Replay) => return Ok(("replay", Some(r.epochs().1))),
        Err(e) => return Err(format!("open: {e}")),
    };
    if o.content_type != ct {
        return Err("content type differs".into());
    }
    if o.plaintext != plaintext {
        return Err("plaintext differs".into());
    }
    let seq = o.seq;
    if ct == ContentType::Ack {
        r.parse_ack(plaintext)
            .map_err(|e| format!("parse_ack: {e}"))?;
    }
    r.accept(seq).map_err(|e| format!("accept: {e}"))?;
    Ok(("accepted", Some(r.epochs().1)))
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, String> {
    match v.get(name) {
        Some(x) if !x.is_null() => Ok(x),
        _ => Err(format!("missing {name}")),
    }
}

fn hex_field(v: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = field(v, name)?
        .as_str()
        .ok_or_else(|| format!("{name} is not a string"))?;
    hex::decode(s).map_err(|e| format!("{name}: {e}"))
}

fn u64_field(v: &Value, name: &str) -> Result<u64, String> {
    field(v, name)?
        .as_u64()
        .ok_or_else(|| format!("{name} is not an integer"))
}

fn str_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, String> {
    field(v, name)?
        .as_str()
        .ok_or_else(|| format!("{name} is not a string"))
}

fn suite_field(v: &Value, name: &str) -> Result<Suite, String> {
    str_field(v, name)?
        .parse()
        .map_err(|_| format!("{name}: unknown suite"))
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, the vector says {want:?}"))
    }
}

fn expect_bytes(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} differs"))
    }
}

/// Checks every case of a scenario file with `provider` on both ends; returns the number of
/// cases.
pub fn check(provider: CryptoProvider, v: &Value) -> Result<usize, String> {
    let cases = field(v, "cases")?.as_array().ok_or("cases")?;
    if cases.is_empty() {
        return Err("no cases".into());
    }
    for (i, c) in cases.iter().enumerate() {
        check_case(provider, c).map_err(|e| format!("case {i} ({}): {e}", c["name"]))?;
    }
    Ok(cases.len())
}

/// Checks one case with `provider` on both ends.
///
/// Device: configured from the case, with a random source holding exactly the recorded draws
/// (per hello: the ephemeral key's generation bytes, each ML-KEM seed checked to expand to the
/// recorded private key, unless the key is reused; then the nonce), it must send the recorded
/// hellos byte for byte (following the recorded Retry), accept M2 (its decapsulation giving
/// `shared_secret`), send the recorded M3, report the recorded adopted time and draw nothing
/// else.
///
/// Gateway: configured from the case (identity, cookie key, policy), it must answer the first
/// hello with the recorded Retry byte for byte and accept the retried hello, or answer the
/// hello with an M2: the recorded one byte for byte if it drew exactly the recorded
/// `gateway_random` (rustcrypto; aws-lc for X25519), else (aws-lc generates its ML-KEM
/// encapsulation itself) the recorded M2's half-open state is rebuilt from the hello, M2 and
/// `shared_secret`. It must then accept M3 as the device.
///
/// Steps: each end seals its records and must produce the recorded bytes (sequence number,
/// epoch); the receiver opens the *recorded* bytes and must get the recorded content type,
/// plaintext, acknowledged ranges, result and epoch; key updates must give the recorded
/// epochs; after `end_session` the side has no session and a record for it is
/// `unknown_session`.
pub fn check_case(provider: CryptoProvider, c: &Value) -> Result<(), String> {
    let suite = suite_field(c, "suite")?;
    let offers = field(c, "offers")?
        .as_array()
        .ok_or("offers")?
        .iter()
        .map(|s| {
            s.as_str()
                .and_then(|s| s.parse::<Suite>().ok())
                .ok_or_else(|| format!("bad offer {s}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sig = offers.first().ok_or("no offers")?.sig;
    if sig != SigAlg::Ed25519 {
        return Err("scenario vectors use Ed25519 (deterministic M3 and records)".into());
    }
    let policy = parse_policy(field(c, "gateway_policy")?)?;
    let dev = field(c, "device")?;
    let gw = field(c, "gateway")?;
    let (dev_id, dev_private, dev_public) = (
        hex_field(dev, "id")?,
        hex_field(dev, "private_key")?,
        hex_field(dev, "public_key")?,
    );
    let (gw_private, gw_public) = (hex_field(gw, "private_key")?, hex_field(gw, "public_key")?);
    expect_bytes(
        "gateway.key_id",
        &key_id(&provider, sig, &gw_public),
        &hex_field(gw, "key_id")?,
    )?;
    let dev_clock = Time(u64_field(c, "device_clock_ms")?);
    let gw_clock = Time(u64_field(c, "gateway_clock_ms")?);
    let adopted = match c.get("adopted_time_ms") {
        Some(Value::Null) | None => None,
        Some(t) => Some(Time(t.as_u64().ok_or("adopted_time_ms")?)),
    };

    let flights = field(c, "handshake")?.as_array().ok_or("handshake")?;
    let kinds: Vec<&str> = flights
        .iter()
        .map(|f| str_field(f, "message"))
        .collect::<Result<_, _>>()?;
    let retry = match kinds[..] {
        ["m1", "m2", "m3"] => None,
        ["m1", "retry", "m1", "m2", "m3"] => Some(&flights[1]),
        _ => return Err(format!("unexpected handshake {kinds:?}")),
    };
    let hellos: Vec<&Value> = flights.iter().filter(|f| f["message"] == "m1").collect();
    let m2f = &flights[flights.len() - 2];
    let m3 = hex_field(&flights[flights.len() - 1], "bytes")?;
    let m2 = hex_field(m2f, "bytes")?;

    // ---- Device.
    let mut draws = Vec::new();
    let mut prev: Option<Vec<u8>> = None;
    for (i, hf) in hellos.iter().enumerate() {
        let kem: KemId = str_field(hf, "kem")?
            .parse()
            .map_err(|_| "unknown kem".to_string())?;
        let want_kem = if i == 0 {
            offers[0].kem
        } else {
            let r = Cookie::from_retry_message(&hex_field(retry.ok_or("retry")?, "bytes")?)
                .map_err(|e| format!("retry: {e}"))?;
            r.suite.kem
        };
        expect_eq("hello kem", kem, want_kem)?;
        let d = ephemeral_draws(kem, hf, "ephemeral_").map_err(|e| format!("hello {i}: {e}"))?;
        let reused = field(hf, "ephemeral_reused")?
            .as_bool()
            .ok_or("ephemeral_reused")?;
        if reused {
            expect_eq("reused ephemeral", Some(&d), prev.as_ref())?;
        } else {
            draws.extend_from_slice(&d);
        }
        let nonce = hex_field(hf, "nonce")?;
        if nonce.len() != 16 {
            return Err("nonce is not 16 bytes".into());
        }
        draws.extend_from_slice(&nonce);
        prev = Some(d);
    }
    let random = FixedRandom::new(draws).leak();
    let device = device_config(
        replay_provider(provider, random),
        &offers,
        &dev_id,
        &dev_private,
        &gw_public,
    )?;
    let (mut hs, m1) = DeviceHandshake::start(std::sync::Arc::new(device), dev_clock)
        .map_err(|e| format!("device start: {e}"))?;
    expect_bytes("M1", &m1, &hex_field(hellos[0], "bytes")?)?;
    if let Some(r) = retry {
        match hs.handle(dev_clock, &hex_field(r, "bytes")?) {
            Ok(DeviceNext::Retry { handshake, hello }) => {
                expect_bytes("retried M1", &hello, &hex_field(hellos[1], "bytes")?)?;
                hs = handshake;
            }
            Ok(DeviceNext::Established(_)) => return Err("device: Retry taken as M2".into()),
            Err(e) => return Err(format!("device at Retry: {e}")),
        }
    }
    let est = match hs.handle(dev_clock, &m2) {
        Ok(DeviceNext::Established(e)) => e,
        Ok(DeviceNext::Retry { .. }) => return Err("device: M2 taken as a retry".into()),
        Err(e) => return Err(format!("device at M2: {e}")),
    };
    expect_bytes("M3", &est.finish, &m3)?;
    expect_eq("adopted time", est.gateway_time, adopted)?;
    expect_eq("device draws left over", random.remaining(), 0)?;
    let gh = GatewayHello::decode(&m2).map_err(|e| format!("M2: {e}"))?;
    expect_eq("M2 suite", gh.suite, suite)?;
    expect_bytes(
        "session_id",
        &gh.session_id.to_be_bytes(),
        &hex_field(m2f, "session_id")?,
    )?;
    let last = hellos[hellos.len() - 1];
    let shared_secret = hex_field(m2f, "shared_secret")?;
    let answered_private = hex_field(last, "ephemeral_private")?;
    let shared = provider
        .kem(suite.kem)
        .and_then(|k| k.dangerous_import_ephemeral(&answered_private))
        .and_then(|e| e.complete(gh.share))
        .map_err(|e| format!("device KEM: {e}"))?;
    expect_bytes("shared_secret", shared.as_bytes(), &shared_secret)?;
    let mut dev_session = Some(est.session);

    // ---- Gateway.
    let cookie_secret = match gw.get("cookie_secret") {
        Some(_) => hex_field(gw, "cookie_secret")?,
        None => vec![0; 32],
    };
    let gw_random = FixedRandom::new(hex_field(m2f, "gateway_random")?).leak();
    // A case with a source: the hellos come from it, to a gateway under load.
    let source = match c.get("source") {
        None => None,
        Some(_) => Some(SourceKey(
            hex_field(c, "source")?
                .try_into()
                .map_err(|_| "source is not 16 bytes".to_string())?,
        )),
    };
    let mut gc = gateway_config(
        provider,
        sig,
        &gw_private,
        gw_random,
        &cookie_secret,
        policy.clone(),
    )?;
    if source.is_some() {
        gc.cookie_threshold = 0;
    }
    let mut server = HandshakeServer::new(gc);
    let first = hello_from(
        &mut server,
        gw_clock,
        &hex_field(hellos[0], "bytes")?,
        source,
    )
    .map_err(|e| format!("gateway at M1: {e}"))?;
    let answer = match (retry, first) {
        (Some(r), HelloReply::Retry { reason, bytes, .. }) => {
            expect_bytes("Retry", &bytes, &hex_field(r, "bytes")?)?;
            expect_eq("retry reason", reason_name(reason), str_field(r, "reason")?)?;
            hello_from(
                &mut server,
                gw_clock,
                &hex_field(hellos[1], "bytes")?,
                source,
            )
            .map_err(|e| format!("gateway at the retried M1: {e}"))?
        }
        (None, a @ HelloReply::GatewayHello { .. }) => a,
        (_, a) => return Err(format!("gateway answered {a:?}")),
    };
    let HelloReply::GatewayHello { bytes: own_m2, .. } = answer else {
        return Err("gateway answered the retried hello with a retry".into());
    };
    let reproduced = gw_random.remaining() == 0;
    if reproduced {
        // This provider drew exactly the recorded randomness: its M2 is the recorded one.
        expect_bytes("M2", &own_m2, &m2)?;
    } else {
        server = HandshakeServer::new(gateway_config(
            provider,
            sig,
            &gw_private,
            FixedRandom::new(Vec::new()).leak(),
            &cookie_secret,
            policy,
        )?);
        server
            .dangerous_resume_half_open(gw_clock, &hex_field(last, "bytes")?, &m2, &shared_secret)
            .map_err(|e| format!("resume: {e}"))?;
    }
    let reg = registry(sig, &dev_id, &dev_public);
    let ge = server
        .handle_finish(gw_clock, &m3, &reg)
        .map_err(|e| format!("gateway at M3: {e}"))?;
    expect_bytes("authenticated device id", &ge.device_id, &dev_id)?;
    let mut gw_session = Some(ge.session);

    run_steps(
        &mut dev_session,
        &mut gw_session,
        field(c, "steps")?.as_array().ok_or("steps")?,
    )
}

/// What a record step recorded, for later deliveries.
struct Sent {
    ct: ContentType,
    plaintext: Vec<u8>,
    record: Vec<u8>,
}

fn run_steps(
    dev: &mut Option<Session>,
    gw: &mut Option<Session>,
    steps: &[Value],
) -> Result<(), String> {
    let mut sent: HashMap<(Side, u64), Sent> = HashMap::new();
    for (i, st) in steps.iter().enumerate() {
        let at = |e: String| format!("step {i}: {e}");
        let t = Time(u64_field(st, "time_ms").map_err(at)?);
        match str_field(st, "step").map_err(at)? {
            "end_session" => {
                let side = Side::parse(str_field(st, "side").map_err(at)?).map_err(at)?;
                *pick(dev, gw, side) = None;
            }
            "key_update" => {
                let side = Side::parse(str_field(st, "side").map_err(at)?).map_err(at)?;
                let s = live(pick(dev, gw, side)).map_err(at)?;
                s.update_send_key(t)
                    .map_err(|e| at(format!("update_send_key: {e}")))?;
                expect_eq(
                    "send epoch",
                    s.epochs().0,
                    u64_field(st, "send_epoch").map_err(at)?,
                )
                .map_err(at)?;
            }
            "record" => record_step(dev, gw, st, t, &mut sent).map_err(at)?,
            "deliver" => {
                let from = Side::parse(str_field(st, "from").map_err(at)?).map_err(at)?;
                let seq = u64_field(st, "seq").map_err(at)?;
                let s = sent
                    .get(&(from, seq))
                    .ok_or_else(|| at(format!("no earlier record {seq} from {}", from.name())))?;
                expect_bytes(
                    "delivered record",
                    &hex_field(st, "record").map_err(at)?,
                    &s.record,
                )
                .map_err(at)?;
                let r = pick(dev, gw, from.peer());
                let got = receive(r, t, &s.record, s.ct, &s.plaintext).map_err(at)?;
                expect_outcome(st, got).map_err(at)?;
            }
            other => return Err(at(format!("unknown step {other}"))),
        }
    }
    Ok(())
}

/// The session of a side that must still have it.
fn live(s: &mut Option<Session>) -> Result<&mut Session, String> {
    s.as_mut()
        .ok_or_else(|| "the session was dropped".to_string())
}

/// Compares a receiver's outcome with the step's `result` and `receiver_epoch` (absent when
/// the receiver no longer has the session).
fn expect_outcome(st: &Value, (result, epoch): (&str, Option<u64>)) -> Result<(), String> {
    expect_eq("result", result, str_field(st, "result")?)?;
    let want = match st.get("receiver_epoch") {
        None | Some(Value::Null) => None,
        Some(_) => Some(u64_field(st, "receiver_epoch")?),
    };
    expect_eq("receiver epoch", epoch, want)
}

fn record_step(
    dev: &mut Option<Session>,
    gw: &mut Option<Session>,
    st: &Value,
    t: Time,
    sent: &mut HashMap<(Side, u64), Sent>,
) -> Result<(), String> {
    let from = Side::parse(str_field(st, "from")?)?;
    let ct = parse_type(str_field(st, "type")?)?;
    let plaintext = hex_field(st, "plaintext")?;
    let record = hex_field(st, "record")?;
    let seq = u64_field(st, "seq")?;
    match ct {
        ContentType::Data => {
            let ids: Vec<u64> = decode_batch(&plaintext)
                .map_err(|e| format!("readings: {e:?}"))?
                .iter()
                .map(|r| r.msg_id)
                .collect();
            let want: Vec<u64> = field(st, "readings")?
                .as_array()
                .ok_or("readings")?
                .iter()
                .map(|x| x.as_u64().ok_or("reading id"))
                .collect::<Result<_, _>>()?;
            expect_eq("reading ids", ids, want)?;
        }
        ContentType::Ack => {
            let ranges = iotseal_proto::record::ack::decode(&plaintext)
                .map_err(|e| format!("ack payload: {e:?}"))?;
            let want: Vec<(u64, u64)> = field(st, "ranges")?
                .as_array()
                .ok_or("ranges")?
                .iter()
                .map(
                    |r| match r.as_array().map(|a| (a[0].as_u64(), a[1].as_u64())) {
                        Some((Some(a), Some(b))) => Ok((a, b)),
                        _ => Err("bad range"),
                    },
                )
                .collect::<Result<_, _>>()?;
            expect_eq("ack ranges", ranges, want)?;
        }
        _ => {}
    }

    // The sender.
    let s = live(pick(dev, gw, from))?;
    let mut own = Vec::new();
    let own_seq = if ct == ContentType::Ack {
        s.seal_ack(t, &mut own)
    } else {
        s.seal(t, ct, &plaintext, &mut own)
    }
    .map_err(|e| format!("seal: {e}"))?;
    expect_eq("sequence number", own_seq, seq)?;
    expect_eq("epoch", s.epochs().0, u64_field(st, "epoch")?)?;
    expect_bytes("record", &own, &record)?;

    // The receiver, with the recorded bytes.
    let delivered = field(st, "delivered")?.as_bool().ok_or("delivered")?;
    if delivered {
        let r = pick(dev, gw, from.peer());
        expect_outcome(st, receive(r, t, &record, ct, &plaintext)?)?;
    }
    sent.insert(
        (from, seq),
        Sent {
            ct,
            plaintext,
            record,
        },
    );
    Ok(())
}
