//! One function per fuzz target. Each never panics on any input unless iotseal breaks one of
//! the properties asserted here (a panic is what libFuzzer reports as a crash).

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use iotseal_proto::Error;
use iotseal_proto::error::PeerMisbehaved;
use iotseal_proto::handshake::messages::{COOKIE_LEN, Cookie, Finish, Hello, MAC1_LEN, MAX_OFFERS};
use iotseal_proto::handshake::{DeviceHandshake, DeviceNext, HelloReply, SuitePolicy};
use iotseal_proto::reading;
use iotseal_proto::record::ack::{self, MAX_ACK_RANGES};
use iotseal_proto::record::batch::{self, MAX_BATCH_RECORDS};
use iotseal_proto::record::{
    ContentType, Header, MAX_RECORD_LEN, ReplayWindow, Role, Session, WINDOW_SIZE,
};
use iotseal_proto::{AeadId, Time};
use iotseal_test::pair::MapRegistry;

use crate::provider::{FAKE, RUSTCRYPTO, awslc};
use crate::rng;
use crate::setup::{
    self, Kind, NOW, device, device_offers, gateway, record_provider, record_suite, registry,
    session_pair,
};

// ---------------------------------------------------------------------------------------
// Handshake, gateway side.

/// `hello`: arbitrary bytes as M1 to the production gateway configuration (aws-lc). The
/// hello MAC stops nearly everything; `hello_macd` goes further.
pub fn hello(data: &[u8]) {
    if let Ok(h) = Hello::decode(data) {
        assert!(!h.offers.is_empty() || h.first_offer.is_none());
        assert!(h.offers.len() <= MAX_OFFERS);
        assert_eq!(h.mac_input.len() + MAC1_LEN, data.len());
        assert!(h.cookie.is_none_or(|c| c.len() == COOKIE_LEN));
    }
    rng::reset();
    let mut server = gateway(awslc(), Kind::AwsLc, SuitePolicy::default());
    let _ = server.handle_hello(NOW, data, &|_| false);
}

/// Gives the cookie a hello carries a valid tag under the fixed cookie key (only the gateway
/// can compute it; this reaches the checks behind it).
fn fix_cookie(msg: &mut [u8]) {
    let Ok(h) = Hello::decode(msg) else { return };
    let Some(c) = h.cookie else { return };
    let Ok(cookie) = Cookie::decode(c) else {
        return;
    };
    let at = c.as_ptr() as usize - msg.as_ptr() as usize;
    let tag = RUSTCRYPTO.hmac.mac(
        &setup::COOKIE_SECRET,
        &[b"iotseal v1 cookie\0", &cookie.tagged_part()],
    );
    msg[at + 40..at + COOKIE_LEN].copy_from_slice(&tag[..16]);
}

/// `hello_macd`: arbitrary bytes as M1 with a valid hello MAC (the pin is public) and, if it
/// carries one, a valid cookie tag. Differential: the aws-lc and the RustCrypto gateways must
/// answer alike (same retry bytes, same suite, same error). A hello that got an M2 must be
/// refused as a replay when sent again.
pub fn hello_macd(data: &[u8]) {
    let mut msg = data.to_vec();
    fix_cookie(&mut msg);
    setup::fix_mac1(&RUSTCRYPTO, Kind::RustCrypto, &mut msg);

    rng::reset();
    let mut a = gateway(awslc(), Kind::AwsLc, SuitePolicy::default());
    let ra = a.handle_hello(NOW, &msg, &|_| false);
    rng::reset();
    let mut b = gateway(RUSTCRYPTO, Kind::RustCrypto, SuitePolicy::default());
    let rb = b.handle_hello(NOW, &msg, &|_| false);
    match (&ra, &rb) {
        (Ok(HelloReply::Retry { bytes: x, .. }), Ok(HelloReply::Retry { bytes: y, .. })) => {
            assert_eq!(x, y, "retry bytes differ between providers")
        }
        (
            Ok(HelloReply::GatewayHello { suite: x, .. }),
            Ok(HelloReply::GatewayHello { suite: y, .. }),
        ) => assert_eq!(x, y, "chosen suite differs between providers"),
        (Err(x), Err(y)) => assert_eq!(x, y, "providers refuse differently"),
        _ => panic!("providers disagree: aws-lc {ra:?}, rustcrypto {rb:?}"),
    }
    if let Ok(HelloReply::GatewayHello { .. }) = rb {
        assert_eq!(
            b.handle_hello(NOW, &msg, &|_| false).err(),
            Some(Error::Replay),
            "a hello nonce was accepted twice"
        );
    }

    // Stricter policies on the same hello: PolicyRefused, key-share retries (and retried
    // hellos answering them), never a suite the policy excludes.
    for policy in [
        setup::classical_policy(),
        SuitePolicy {
            require_pq_kem: true,
            require_pq_sig: true,
            ..SuitePolicy::default()
        },
    ] {
        rng::reset();
        let mut c = gateway(RUSTCRYPTO, Kind::RustCrypto, policy.clone());
        if let Ok(HelloReply::GatewayHello { suite, .. }) = c.handle_hello(NOW, &msg, &|_| false) {
            assert!(policy.allows(suite), "policy ignored: {suite}");
        }
    }
}

fn fake_registry() -> &'static MapRegistry {
    static R: OnceLock<MapRegistry> = OnceLock::new();
    R.get_or_init(|| registry(Kind::Fake))
}

/// `finish`: byte 0 picks the suite, the rest is M3 for a half-open handshake from a genuine
/// M1, on the fuzzing provider (so the fuzzer can forge every MAC, signature and tag). Records
/// after M3 are opened with the new session as the gateway does. Returns whether M3 was
/// accepted (the corpus generator checks its seeds with it).
pub fn finish(data: &[u8]) -> bool {
    let Some((&variant, m3)) = data.split_first() else {
        return false;
    };
    let offers = device_offers();
    let offers = offers[usize::from(variant) % offers.len()].clone();
    rng::reset();
    let mut server = gateway(FAKE, Kind::Fake, SuitePolicy::default());
    let (_, m1) = DeviceHandshake::start(device(FAKE, Kind::Fake, offers), NOW).expect("start");
    let Ok(HelloReply::GatewayHello { session_id, .. }) = server.handle_hello(NOW, &m1, &|_| false)
    else {
        panic!("a genuine hello was refused");
    };
    let Ok(est) = server.handle_finish(NOW, m3, fake_registry()) else {
        return false;
    };
    assert_eq!(est.session.id(), session_id);
    assert_eq!(est.session.role(), Role::Gateway);
    assert!(!est.device_id.is_empty() && est.device_id.len() <= 32);
    assert_eq!(
        server.handle_finish(NOW, m3, fake_registry()).err(),
        Some(Error::UnknownSession),
        "an M3 was accepted twice"
    );
    let mut session = est.session;
    receive(&mut session, NOW, est.records);
    true
}

/// Opens every record of a batch as the receiving end does: open, process, accept, answer
/// (the gateway with an ack). Checks that no accepted sequence number opens twice.
fn receive(s: &mut Session, now: Time, records: &[u8]) {
    let Ok(records) = batch::split(records) else {
        return;
    };
    for r in records {
        let mut buf = r.to_vec();
        let replay = Header::decode(&buf).is_ok_and(|(h, _)| s.was_accepted(h.seq));
        let Ok(o) = s.open(now, &mut buf) else {
            continue;
        };
        assert!(!replay, "a record with an accepted sequence number opened");
        let seq = o.seq;
        match (s.role(), o.content_type) {
            (Role::Gateway, ContentType::Data) => {
                let _ = reading::decode_batch(o.plaintext);
            }
            (Role::Device, ContentType::Ack) => {
                let _ = s.parse_ack(o.plaintext);
            }
            _ => {}
        }
        s.accept(seq)
            .expect("the sequence number of an opened record is acceptable");
        assert!(s.was_accepted(seq));
        if s.role() == Role::Gateway {
            let mut ack = Vec::new();
            let _ = s.seal_ack(now, &mut ack);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Handshake, device side.

/// `gateway_hello` (like `finish` and `hello`, a target over the protocol core, not over a
/// device: it drives `DeviceHandshake` by hand because the core's handshake state machine is
/// what it fuzzes, and its checks look inside it; a device drives that state machine only
/// through the engine of `iotseal-device-core`, as the handshakes of [`crate::setup`] do):
/// byte 0 picks the device (bit 7: fuzzing provider, else RustCrypto; the
/// rest: the offer list); the rest is a batch (`varint length || bytes`, see
/// [`batch::split`]) of answers fed in order: retries and M2, then records to the
/// established session. Returns whether the device established a session.
pub fn gateway_hello(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let Ok(msgs) = batch::split(rest) else {
        return false;
    };
    let (p, kind) = if mode & 0x80 != 0 {
        (FAKE, Kind::Fake)
    } else {
        (RUSTCRYPTO, Kind::RustCrypto)
    };
    let offers = device_offers();
    let offers = offers[usize::from(mode & 0x7f) % offers.len()].clone();
    rng::reset();
    let (hs, _) = DeviceHandshake::start(device(p, kind, offers.clone()), NOW).expect("start");
    let mut hs = Some(hs);
    let mut msgs = msgs.into_iter();
    let est = loop {
        let (Some(h), Some(m)) = (hs.take(), msgs.next()) else {
            return false;
        };
        match h.handle(NOW, m) {
            Ok(DeviceNext::Retry { handshake, hello }) => {
                let parsed = Hello::decode(&hello).expect("the device's own hello parses");
                assert!(
                    parsed.cookie.is_some(),
                    "a retried hello without the cookie"
                );
                assert_eq!(parsed.offers, offers, "a retry changed the offers");
                assert_eq!(handshake.hello(), &hello[..]);
                hs = Some(handshake);
            }
            Ok(DeviceNext::Established(e)) => break e,
            Err(_) => return false,
        }
    };
    assert!(
        offers.contains(&est.session.suite()),
        "established an unoffered suite"
    );
    let f = Finish::decode(&est.finish).expect("the device's own M3 parses");
    assert_eq!(f.session_id, est.session.id());
    assert!(f.records.is_empty());
    let mut session = est.session;
    for m in msgs {
        receive(&mut session, NOW, m);
    }
    true
}

// ---------------------------------------------------------------------------------------
// Records.

/// One step of `record_open`.
#[derive(Arbitrary, Debug)]
pub enum RecordOp {
    /// Arbitrary bytes as a record to one end.
    Open {
        /// To the gateway (else to the device).
        to_gateway: bool,
        /// The record.
        bytes: Vec<u8>,
    },
    /// Seal at one end, flip bits, open at the other.
    Exchange {
        /// Device to gateway (data), else gateway to device (ack).
        from_device: bool,
        /// Send a close record instead.
        close: bool,
        /// The plaintext.
        plaintext: Vec<u8>,
        /// `(position mod length, xor)` flips.
        flips: Vec<(u16, u8)>,
        /// Mark it received after opening.
        accept: bool,
    },
    /// Let time pass (seconds, mod 7200).
    Advance(u16),
    /// One end updates its sending key.
    UpdateKey {
        /// The device (else the gateway).
        device: bool,
    },
    /// The gateway acknowledges, the device opens and parses the ack.
    Ack,
}

/// The input of `record_open`.
#[derive(Arbitrary, Debug)]
pub struct RecordInput {
    /// Genuine record protection (RustCrypto), else the fuzzing provider's.
    pub genuine: bool,
    /// Which AEAD (mod 4).
    pub aead: u8,
    /// The steps.
    pub ops: Vec<RecordOp>,
}

/// `record_open`: an established pair, then a sequence of records both ways, opened, tampered
/// with and replayed. With genuine protection: a tampered record never opens, a genuine
/// current-epoch record always does. Always: no accepted sequence number opens twice.
pub fn record_open(input: RecordInput) {
    let aead = AeadId::ALL[usize::from(input.aead) % AeadId::ALL.len()];
    let genuine = input.genuine;
    let pair = session_pair(record_provider(genuine), record_suite(aead));
    let (mut dev, mut gw) = (pair.device, pair.gateway);
    let mut now = NOW;
    for op in input.ops {
        match op {
            RecordOp::Open { to_gateway, bytes } => {
                let rx = if to_gateway { &mut gw } else { &mut dev };
                let mut b = vec![];
                batch::push(&mut b, &bytes);
                receive(rx, now, &b);
            }
            RecordOp::Exchange {
                from_device,
                close,
                plaintext,
                flips,
                accept,
            } => {
                let (tx, rx) = if from_device {
                    (&mut dev, &mut gw)
                } else {
                    (&mut gw, &mut dev)
                };
                let ct = match (close, from_device) {
                    (true, _) => ContentType::Close,
                    (false, true) => ContentType::Data,
                    (false, false) => ContentType::Ack,
                };
                let mut rec = Vec::new();
                let Ok(seq) = tx.seal(now, ct, &plaintext, &mut rec) else {
                    continue;
                };
                let original = rec.clone();
                for (pos, x) in flips {
                    let i = usize::from(pos) % rec.len();
                    rec[i] ^= x;
                }
                let tampered = rec != original;
                let same_epoch = tx.epochs().0 == rx.epochs().1;
                let sent = rec.clone();
                let replay = Header::decode(&rec).is_ok_and(|(h, _)| rx.was_accepted(h.seq));
                match rx.open(now, &mut rec) {
                    Ok(o) => {
                        assert!(!replay, "a record with an accepted sequence number opened");
                        assert!(!(genuine && tampered), "a tampered record opened");
                        if !tampered {
                            assert_eq!((o.seq, o.content_type), (seq, ct));
                            assert_eq!(o.plaintext, &plaintext[..]);
                        }
                        let s = o.seq;
                        if accept {
                            rx.accept(s)
                                .expect("an opened record's number is acceptable");
                            let mut again = sent;
                            assert!(rx.open(now, &mut again).is_err(), "a replay opened");
                        }
                    }
                    Err(e) => assert!(
                        !(genuine && !tampered && same_epoch),
                        "a genuine record was refused: {e:?}"
                    ),
                }
            }
            RecordOp::Advance(s) => now = now.plus_millis(u64::from(s % 7200) * 1000),
            RecordOp::UpdateKey { device } => {
                let s = if device { &mut dev } else { &mut gw };
                let _ = s.update_send_key(now);
            }
            RecordOp::Ack => {
                let mut rec = Vec::new();
                if gw.seal_ack(now, &mut rec).is_err() {
                    continue;
                }
                let same_epoch = gw.epochs().0 == dev.epochs().1;
                match dev.open(now, &mut rec) {
                    Ok(o) => {
                        assert_eq!(o.content_type, ContentType::Ack);
                        let parsed = dev.parse_ack(o.plaintext);
                        assert!(
                            !genuine || parsed.is_ok(),
                            "the device refused a genuine ack: {parsed:?}"
                        );
                    }
                    Err(e) => assert!(!(genuine && same_epoch), "a genuine ack was refused: {e:?}"),
                }
            }
        }
    }
}

/// `batch`: split, bounds, and exact re-encoding (lengths are minimal varints, so a batch has
/// one encoding).
pub fn batch(data: &[u8]) {
    let Ok(records) = batch::split(data) else {
        return;
    };
    assert!(records.len() <= MAX_BATCH_RECORDS);
    let mut out = Vec::with_capacity(data.len());
    for r in &records {
        assert!(r.len() <= MAX_RECORD_LEN);
        batch::push(&mut out, r);
    }
    assert_eq!(out, data, "a batch does not re-encode to itself");
}

/// `reading`: decode a data record's plaintext; what decodes re-encodes to the same bytes.
pub fn reading(data: &[u8]) {
    let Ok(readings) = reading::decode_batch(data) else {
        return;
    };
    assert!(!readings.is_empty() && readings.len() <= reading::MAX_READINGS);
    for r in &readings {
        assert!(r.values.len() <= reading::MAX_VALUES);
        assert!(r.extra.len() <= reading::MAX_EXTRA);
    }
    assert_eq!(
        reading::encode_batch(&readings),
        data,
        "readings do not re-encode to themselves"
    );
}

fn ack_sessions() -> &'static [Session] {
    static S: OnceLock<Vec<Session>> = OnceLock::new();
    S.get_or_init(|| {
        [0u64, 1, 2, 63, 64, 1500]
            .iter()
            .map(|&n| {
                let mut dev = session_pair(FAKE, record_suite(AeadId::Aes128Gcm)).device;
                for _ in 0..n {
                    dev.seal(NOW, ContentType::Data, b"x", &mut Vec::new())
                        .expect("seal");
                }
                dev
            })
            .collect()
    })
}

/// `ack`: decode, invariants, exact re-encoding, and `Session::parse_ack` against sessions
/// that sent 0, 1, 2, 63, 64 and 1500 records.
pub fn ack(data: &[u8]) {
    let decoded = ack::decode(data);
    if let Ok(ranges) = &decoded {
        assert!(ranges.len() <= MAX_ACK_RANGES);
        for &(a, b) in ranges {
            assert!(a <= b);
        }
        for w in ranges.windows(2) {
            assert!(
                w[1].1 + 1 < w[0].0,
                "ranges not descending and disjoint: {w:?}"
            );
        }
        let mut out = Vec::new();
        ack::encode(ranges.iter().copied(), &mut out);
        assert_eq!(out, data, "an ack does not re-encode to itself");
    }
    for s in ack_sessions() {
        match (s.parse_ack(data), &decoded) {
            (Ok(r), Ok(d)) => {
                assert_eq!(&r, d);
                assert!(r.iter().all(|&(_, b)| b < s.next_seq()));
            }
            (Err(Error::PeerMisbehaved(PeerMisbehaved::AckOfUnsent)), Ok(d)) => {
                assert!(d.first().is_some_and(|&(_, b)| b >= s.next_seq()));
            }
            (Err(Error::Malformed(m)), Err(d)) => assert_eq!(m, *d),
            (r, d) => panic!("parse_ack {r:?} but decode {d:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The replay window against a model.

/// A sequence number, absolute or relative to the highest marked one.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Seq {
    /// Absolute (bounded to the varint range, the widest the wire carries).
    Abs(u64),
    /// Highest minus this.
    Below(u16),
    /// Highest plus this.
    Above(u16),
}

/// One operation on the window.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum WindowOp {
    /// `check`.
    Check(Seq),
    /// `mark`.
    Mark(Seq),
    /// `contains`.
    Contains(Seq),
    /// `ranges(max)`.
    Ranges(u8),
}

/// The specification: a set of marked numbers; a number more than [`WINDOW_SIZE`] below the
/// highest marked one is refused (and unknown), as is one marked before.
#[derive(Default)]
struct Model {
    marked: std::collections::BTreeSet<u64>,
    highest: Option<u64>,
}

impl Model {
    fn too_old(&self, s: u64) -> bool {
        self.highest.is_some_and(|h| s + WINDOW_SIZE <= h)
    }

    fn acceptable(&self, s: u64) -> bool {
        !self.too_old(s) && !self.marked.contains(&s)
    }

    fn mark(&mut self, s: u64) {
        self.marked.insert(s);
        let h = self.highest.map_or(s, |h| h.max(s));
        self.highest = Some(h);
        // Numbers this old never matter again (the highest only grows).
        self.marked = self.marked.split_off(&h.saturating_sub(WINDOW_SIZE - 1));
    }

    fn ranges(&self, max: usize) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &s in self.marked.iter().rev() {
            match out.last_mut() {
                Some((a, _)) if *a == s + 1 => *a = s,
                _ => out.push((s, s)),
            }
        }
        out.truncate(max);
        out
    }
}

/// `replay_window`: every operation's answer equals the model's.
pub fn replay_window(ops: Vec<WindowOp>) {
    const MAX: u64 = iotseal_proto::codec::VARINT_MAX;
    let mut w = ReplayWindow::new();
    let mut m = Model::default();
    let resolve = |m: &Model, s: Seq| match s {
        Seq::Abs(v) => v % (MAX + 1),
        Seq::Below(d) => m.highest.unwrap_or(0).saturating_sub(u64::from(d)),
        Seq::Above(d) => (m.highest.unwrap_or(0) + u64::from(d)).min(MAX),
    };
    for op in ops {
        match op {
            WindowOp::Check(s) => {
                let s = resolve(&m, s);
                assert_eq!(w.check(s).is_ok(), m.acceptable(s), "check({s})");
            }
            WindowOp::Mark(s) => {
                let s = resolve(&m, s);
                let expect = m.acceptable(s);
                let got = w.mark(s);
                assert_eq!(got.is_ok(), expect, "mark({s})");
                if let Err(e) = got {
                    assert_eq!(e, Error::Replay);
                }
                if expect {
                    m.mark(s);
                }
            }
            WindowOp::Contains(s) => {
                let s = resolve(&m, s);
                let expect = !m.too_old(s) && m.marked.contains(&s);
                assert_eq!(w.contains(s), expect, "contains({s})");
            }
            WindowOp::Ranges(max) => {
                let max = usize::from(max);
                assert_eq!(
                    w.ranges(max).collect::<Vec<_>>(),
                    m.ranges(max),
                    "ranges({max})"
                );
            }
        }
        assert_eq!(w.highest(), m.highest);
    }
    assert_eq!(
        w.ranges(usize::MAX).collect::<Vec<_>>(),
        m.ranges(usize::MAX)
    );
}

// ---------------------------------------------------------------------------------------
// Files and JSON.

/// `scenario`: a scenario file (TOML) parsed and validated; one that validates survives a
/// save and load.
pub fn scenario(data: &[u8]) {
    use iotseal_device::sim::Scenario;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(s) = toml::from_str::<Scenario>(text) else {
        return;
    };
    if s.validate().is_err() {
        return;
    }
    let saved = toml::to_string(&s).expect("a valid scenario serializes");
    let back: Scenario = toml::from_str(&saved)
        .unwrap_or_else(|e| panic!("a saved scenario does not load: {e}\n{saved}"));
    assert_eq!(
        toml::to_string(&back).expect("serializes"),
        saved,
        "a scenario changed through save and load"
    );
    back.validate().expect("a saved valid scenario stays valid");
}

/// `admin_json`: what the admin client (`iotseal_device::AdminClient`) parses from the
/// gateway's admin API: the device list as a JSON value, readings (an array or
/// `{"readings": [...]}`) whose payloads are hex-encoded readings, and algorithm names. The
/// gateway's own request types are private and not reachable from here.
pub fn admin_json(data: &[u8]) {
    use iotseal_device::StoredReadingJson;
    use serde_json::Value;
    let _ = serde_json::from_slice::<iotseal_proto::SigAlg>(data);
    let _ = serde_json::from_slice::<Vec<StoredReadingJson>>(data);
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let arr = if v.is_array() {
        v
    } else {
        v.get("readings").cloned().unwrap_or(Value::Null)
    };
    let Ok(rows) = serde_json::from_value::<Vec<StoredReadingJson>>(arr) else {
        return;
    };
    for r in rows {
        if let Ok(payload) = hex::decode(&r.payload_hex) {
            // One reading: a batch of one.
            let mut b = vec![1u8];
            b.extend_from_slice(&payload);
            let _ = reading::decode_batch(&b);
        }
    }
}

// ---------------------------------------------------------------------------------------

/// Every target, by name.
pub const TARGETS: &[&str] = &[
    "hello",
    "hello_macd",
    "finish",
    "gateway_hello",
    "record_open",
    "batch",
    "reading",
    "ack",
    "replay_window",
    "scenario",
    "admin_json",
];

/// Runs `target` on `data` as its libFuzzer binary does (structured targets decode `data`
/// with `arbitrary_take_rest`, as `fuzz_target!` does).
pub fn run(target: &str, data: &[u8]) {
    use arbitrary::Unstructured;
    match target {
        "hello" => hello(data),
        "hello_macd" => hello_macd(data),
        "finish" => {
            finish(data);
        }
        "gateway_hello" => {
            gateway_hello(data);
        }
        "record_open" => {
            if let Ok(i) = RecordInput::arbitrary_take_rest(Unstructured::new(data)) {
                record_open(i);
            }
        }
        "batch" => batch(data),
        "reading" => reading(data),
        "ack" => ack(data),
        "replay_window" => {
            if let Ok(ops) = Vec::<WindowOp>::arbitrary_take_rest(Unstructured::new(data)) {
                replay_window(ops);
            }
        }
        "scenario" => scenario(data),
        "admin_json" => admin_json(data),
        other => panic!("unknown target {other}"),
    }
}
