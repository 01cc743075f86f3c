//! Test support: an in-memory gateway (the gateway side of iotseal-proto, processing
//! requests as iotseal-gateway's HTTP and MQTT bindings do: answer cache, acknowledgements
//! only after storing, one store per message id), fault injection, seeded randomness and a
//! driver loop on virtual time.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use iotseal_device_core::{
    Endpoint, Engine, EngineConfig, Event, MsgId, Response, Sample, Transmit,
};
use iotseal_proto::crypto::{CryptoError, CryptoProvider, SecureRandom, SigningKey};
use iotseal_proto::error::Error;
use iotseal_proto::handshake::messages::encode_alert;
use iotseal_proto::handshake::{
    GatewayConfig, GatewayIdentity, HandshakeServer, HelloReply, PinnedKey, RegisteredDevice,
    SourceKey,
};
use iotseal_proto::reading::{Reading, SensorKind, decode_batch};
use iotseal_proto::record::header::Header;
use iotseal_proto::record::{ContentType, Session, batch};
use iotseal_proto::{Refusal, Suite, Time};

/// 2026-01-01T00:00:00Z.
pub const T0: Time = Time(1_767_225_600_000);

/// The fast suite most tests use.
pub fn fast_suite() -> Suite {
    "x25519/ed25519/aes256gcm".parse().unwrap()
}

/// A deterministic random source (splitmix64; no security, tests only).
#[derive(Debug)]
pub struct SeededRandom(Mutex<u64>);

impl SecureRandom for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        let mut s = self.0.lock().unwrap();
        for chunk in dest.chunks_mut(8) {
            *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

/// The RustCrypto provider with a seeded random source.
pub fn provider(seed: u64) -> CryptoProvider {
    let rng: &'static SeededRandom = Box::leak(Box::new(SeededRandom(Mutex::new(seed))));
    iotseal_crypto_rustcrypto::provider(rng)
}

/// How answers travel back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// HTTP: status and body (a refusal: error status, alert body).
    Http,
    /// MQTT: the payload alone (a refusal: the 2-byte alert).
    Mqtt,
}

/// The HTTP status of a refusal (as iotseal-gateway's `status_for`).
pub fn status_for(r: Refusal) -> u16 {
    match r {
        Refusal::AuthFailed => 403,
        Refusal::Replay => 409,
        Refusal::UnknownSession => 404,
        Refusal::NoCommonSuite => 406,
        Refusal::Busy => 503,
        Refusal::SessionEnded => 410,
        _ => 400,
    }
}

/// What became of a request.
#[derive(Debug)]
pub enum Outcome {
    /// An answer: status (200 or a refusal) and bytes.
    Answer(u16, Vec<u8>),
    /// No answer reached the device.
    Lost,
}

/// An in-memory gateway with fault injection.
pub struct Gateway {
    pub server: HandshakeServer,
    pub registry: HashMap<Vec<u8>, RegisteredDevice>,
    pub sessions: BTreeMap<u32, Session>,
    /// Stored readings by message id.
    pub stored: BTreeMap<u64, Reading>,
    /// Readings received again and not stored (the message id was stored).
    pub duplicates: u64,
    /// Records refused for authentication (bad epoch, failed decryption).
    pub auth_failures: u64,
    /// Gateway clock = the device driver's clock + this.
    pub clock_offset_ms: i64,
    /// Answer the next n requests with Busy (without processing them).
    pub busy: u32,
    /// The next n requests are lost before they reach the gateway.
    pub drop_before: u32,
    /// The next n requests are processed but their answers are lost.
    pub drop_after: u32,
    /// Corrupt these records (by index) of the next records request in transit.
    pub corrupt: Vec<usize>,
    /// Refuse the next records request with this refusal (without processing it).
    pub refuse_records: Option<Refusal>,
    /// Refuse requests larger than this (HTTP 413 with a Malformed alert; over MQTT the
    /// Malformed alert alone), as `limits.max_body` does.
    pub max_body: Option<usize>,
    /// Every request that reached the gateway, in order.
    pub requests: Vec<Transmit>,
    /// The ranges of every acknowledgement sealed, in order.
    pub acks: Vec<Vec<(u64, u64)>>,
    pub binding: Binding,
    /// The source key the transport gives with each hello (`handle_hello_from`, as the
    /// gateway's bindings do); `None`: hellos without a source (`handle_hello`).
    pub source: Option<SourceKey>,
}

impl Gateway {
    pub fn now(&self, now: Time) -> Time {
        Time((now.as_millis() as i64 + self.clock_offset_ms) as u64)
    }

    /// Forgets every session (as a gateway restart does).
    pub fn forget_sessions(&mut self) {
        self.sessions.clear();
    }

    /// Handles one request as the gateway's bindings do.
    pub fn serve(&mut self, now: Time, t: &Transmit) -> Outcome {
        if self.drop_before > 0 {
            self.drop_before -= 1;
            return Outcome::Lost;
        }
        let mut t = t.clone();
        if t.endpoint == Endpoint::Records && !self.corrupt.is_empty() {
            t.body = corrupt_records(&t.body, &std::mem::take(&mut self.corrupt));
        }
        if self.max_body.is_some_and(|m| t.body.len() > m) {
            return Outcome::Answer(413, encode_alert(Refusal::Malformed).to_vec());
        }
        self.requests.push(t.clone());
        let answer = if self.busy > 0 {
            self.busy -= 1;
            Err(Refusal::Busy)
        } else {
            let now = self.now(now);
            match t.endpoint {
                Endpoint::Handshake => self.handshake(now, &t.body),
                Endpoint::Records => match self.refuse_records.take() {
                    Some(r) => Err(r),
                    None => self.records(now, &t.body),
                },
            }
        };
        if self.drop_after > 0 {
            self.drop_after -= 1;
            return Outcome::Lost;
        }
        match answer {
            Ok(bytes) => Outcome::Answer(200, bytes),
            Err(r) => Outcome::Answer(status_for(r), encode_alert(r).to_vec()),
        }
    }

    /// Gives an outcome to the engine, in this gateway's binding.
    pub fn deliver(&self, engine: &mut Engine, now: Time, o: &Outcome) {
        match (o, self.binding) {
            (Outcome::Lost, _) => engine.handle_transport_error(now),
            (Outcome::Answer(status, body), Binding::Http) => {
                engine.handle_response(now, Response::http(*status, body))
            }
            (Outcome::Answer(_, body), Binding::Mqtt) => {
                engine.handle_response(now, Response::Payload(body))
            }
        }
    }

    fn handshake(&mut self, now: Time, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        if let Some(a) = self.server.cached_answer(now, body) {
            return Ok(a);
        }
        match body.first() {
            Some(0x01) => {
                let sessions = &self.sessions;
                let in_use = |id| sessions.contains_key(&id);
                let reply = match self.source {
                    Some(s) => self.server.handle_hello_from(now, body, s, &in_use),
                    None => self.server.handle_hello(now, body, &in_use),
                };
                match reply {
                    Ok(
                        HelloReply::GatewayHello { bytes, .. } | HelloReply::Retry { bytes, .. },
                    ) => Ok(bytes),
                    Err(e) => Err(e.refusal()),
                }
            }
            Some(0x04) => {
                let reg = &self.registry;
                let est = self
                    .server
                    .handle_finish(now, body, &|id: &[u8]| reg.get(id).cloned())
                    .map_err(|e| e.refusal())?;
                let mut session = est.session;
                let records = batch::split(est.records).unwrap_or_default();
                let (ack, _) = self.process(now, &mut session, &records, true);
                let mut answer = Vec::new();
                batch::push(&mut answer, &ack.ok_or(Refusal::Busy)?);
                self.sessions.insert(session.id(), session);
                self.server.remember_answer(now, body, answer.clone());
                Ok(answer)
            }
            _ => Err(Refusal::Malformed),
        }
    }

    fn records(&mut self, now: Time, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let recs = batch::split(body).map_err(|_| Refusal::Malformed)?;
        if recs.is_empty() {
            return Err(Refusal::Malformed);
        }
        let mut by_session: BTreeMap<u32, Vec<&[u8]>> = BTreeMap::new();
        let mut first = None;
        for r in recs {
            match Header::peek_session_id(r) {
                Ok(id) => by_session.entry(id).or_default().push(r),
                Err(_) => {
                    first.get_or_insert(Refusal::Malformed);
                }
            }
        }
        let mut answer = Vec::new();
        for (id, rs) in by_session {
            let Some(mut s) = self.sessions.remove(&id) else {
                first.get_or_insert(Refusal::UnknownSession);
                continue;
            };
            let (ack, refusal) = self.process(now, &mut s, &rs, false);
            if let Some(r) = refusal {
                first.get_or_insert(r);
            }
            if let Some(a) = ack {
                batch::push(&mut answer, &a);
            }
            if !s.is_expired(now) {
                self.sessions.insert(id, s);
            }
        }
        if answer.is_empty() {
            Err(first.unwrap_or(Refusal::Malformed))
        } else {
            Ok(answer)
        }
    }

    /// Opens records, stores their readings (once per message id), marks them, and seals an
    /// acknowledgement if anything was accepted or replayed (or `force`).
    fn process(
        &mut self,
        now: Time,
        s: &mut Session,
        records: &[&[u8]],
        force: bool,
    ) -> (Option<Vec<u8>>, Option<Refusal>) {
        let mut accepted = Vec::new();
        let mut replays = 0;
        let mut refusal = None;
        let mut seen = HashSet::new();
        for r in records {
            let mut buf = r.to_vec();
            match s.open(now, &mut buf) {
                Ok(o) if seen.contains(&o.seq) => replays += 1,
                Ok(o) if o.content_type == ContentType::Data => match decode_batch(o.plaintext) {
                    Ok(readings) => {
                        for rd in readings {
                            match self.stored.entry(rd.msg_id) {
                                std::collections::btree_map::Entry::Occupied(_) => {
                                    self.duplicates += 1
                                }
                                std::collections::btree_map::Entry::Vacant(v) => {
                                    v.insert(rd);
                                }
                            }
                        }
                        seen.insert(o.seq);
                        accepted.push(o.seq);
                    }
                    Err(_) => {
                        refusal.get_or_insert(Refusal::Malformed);
                    }
                },
                Ok(_) => {
                    refusal.get_or_insert(Refusal::AuthFailed);
                }
                Err(Error::Replay) => {
                    replays += 1;
                    refusal.get_or_insert(Refusal::Replay);
                }
                Err(e) => {
                    if e.refusal() == Refusal::AuthFailed {
                        self.auth_failures += 1;
                    }
                    refusal.get_or_insert(e.refusal());
                }
            }
        }
        for seq in &accepted {
            s.accept(*seq).unwrap();
        }
        if accepted.is_empty() && replays == 0 && !force {
            return (None, refusal);
        }
        self.acks.push(s.window().ranges(32).collect());
        let mut ack = Vec::new();
        match s.seal_ack(now, &mut ack) {
            Ok(_) => (Some(ack), refusal),
            Err(e) => (None, Some(e.refusal())),
        }
    }
}

/// Flips a byte in the tag of the records at `indexes` of a batch.
fn corrupt_records(body: &[u8], indexes: &[usize]) -> Vec<u8> {
    let recs = batch::split(body).unwrap();
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let mut r = r.to_vec();
        if indexes.contains(&i) {
            *r.last_mut().unwrap() ^= 1;
        }
        batch::push(&mut out, &r);
    }
    out
}

/// A device engine and a gateway that trust each other.
pub struct Harness {
    pub engine: Engine,
    pub gw: Gateway,
    /// The device driver's clock.
    pub now: Time,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Every request the engine gave, in order (lost ones included).
    pub sent: Vec<Transmit>,
    /// Message ids pushed.
    pub pushed: Vec<MsgId>,
}

pub fn harness(
    seed: u64,
    tweak: impl FnOnce(&mut EngineConfig),
    gateway: impl FnOnce(&mut GatewayConfig),
) -> Harness {
    harness_with(seed, fast_suite(), tweak, gateway)
}

pub fn harness_with(
    seed: u64,
    suite: Suite,
    tweak: impl FnOnce(&mut EngineConfig),
    gateway: impl FnOnce(&mut GatewayConfig),
) -> Harness {
    let dp = provider(seed);
    let gp = provider(seed ^ 0x6a7e_5eed);
    let sig = suite.sig;
    let gkey: Box<dyn SigningKey> = gp.signature(sig).unwrap().generate(gp.random).unwrap();
    let dkey: Box<dyn SigningKey> = dp.signature(sig).unwrap().generate(dp.random).unwrap();
    let pins = vec![PinnedKey {
        alg: sig,
        public_key: gkey.public_key(),
    }];
    let device_id = format!("dev-{seed}").into_bytes();
    let mut registry = HashMap::new();
    registry.insert(
        device_id.clone(),
        RegisteredDevice {
            alg: sig,
            public_key: dkey.public_key(),
            revoked: false,
            policy: None,
        },
    );
    let mut cfg = EngineConfig::new(device_id, dkey, pins);
    cfg.offers = vec![suite];
    cfg.readings_per_record = 10;
    cfg.records_per_request = 4;
    tweak(&mut cfg);
    let engine = Engine::new(cfg, dp).unwrap();
    let mut gc = GatewayConfig::new(gp, vec![GatewayIdentity::new(&gp, gkey)]).unwrap();
    gateway(&mut gc);
    let gw = Gateway {
        server: HandshakeServer::new(gc),
        registry,
        sessions: BTreeMap::new(),
        stored: BTreeMap::new(),
        duplicates: 0,
        auth_failures: 0,
        clock_offset_ms: 0,
        busy: 0,
        drop_before: 0,
        drop_after: 0,
        corrupt: Vec::new(),
        refuse_records: None,
        max_body: None,
        requests: Vec::new(),
        acks: Vec::new(),
        binding: Binding::Http,
        source: None,
    };
    Harness {
        engine,
        gw,
        now: T0,
        events: Vec::new(),
        sent: Vec::new(),
        pushed: Vec::new(),
    }
}

/// Reading number `i` (values tell readings apart).
pub fn sample(i: u64) -> Sample {
    Sample {
        time: None,
        values: vec![(SensorKind::Temperature, 20.0 + i as f32 / 8.0)],
        extra: i.to_be_bytes().to_vec(),
    }
}

impl Harness {
    /// The clock correction of the first completed handshake that adopted one.
    pub fn clock_adjusted(&self) -> Option<i64> {
        self.events.iter().find_map(|e| match e {
            Event::HandshakeComplete {
                clock_adjusted_ms, ..
            } => *clock_adjusted_ms,
            _ => None,
        })
    }

    /// Pushes `n` readings.
    pub fn push(&mut self, n: u64) {
        for i in 0..n {
            let id = self.engine.push(self.now, sample(i)).unwrap();
            self.pushed.push(id);
        }
    }

    fn drain(&mut self) {
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    /// One request, if the engine gives one now: served and answered. Whether it did.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.engine.poll_transmit(self.now) else {
            self.drain();
            return false;
        };
        self.sent.push(t.clone());
        assert!(
            self.engine.poll_transmit(self.now).is_none(),
            "two requests in flight"
        );
        self.now = self.now.plus_millis(2);
        let o = self.gw.serve(self.now, &t);
        self.gw.deliver(&mut self.engine, self.now, &o);
        self.drain();
        true
    }

    /// One request now, or else after waiting for the next timeout.
    pub fn next(&mut self) -> bool {
        if self.step() {
            return true;
        }
        match self.engine.poll_timeout() {
            Some(t) if t > self.now => {
                self.now = t;
                self.step()
            }
            _ => false,
        }
    }

    /// Runs requests and waits out timeouts until nothing is pending (or `max` steps).
    pub fn run(&mut self, max: usize) {
        for _ in 0..max {
            if self.step() {
                continue;
            }
            if self.engine.pending() == 0 {
                return;
            }
            match self.engine.poll_timeout() {
                Some(t) if t > self.now => self.now = t,
                _ => return,
            }
        }
        panic!(
            "not done after {max} steps: {} pending",
            self.engine.pending()
        );
    }

    /// Every acknowledged message id, in order, with repetitions.
    pub fn acknowledged(&self) -> Vec<MsgId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Acknowledged { msg_ids } => Some(msg_ids.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Checks that every pushed reading was acknowledged exactly once and stored once.
    pub fn assert_all_delivered_once(&self) {
        let acked = self.acknowledged();
        let set: HashSet<MsgId> = acked.iter().copied().collect();
        assert_eq!(set.len(), acked.len(), "a reading acknowledged twice");
        let pushed: HashSet<MsgId> = self.pushed.iter().copied().collect();
        assert_eq!(set, pushed, "acknowledged ≠ pushed");
        let stored: HashSet<MsgId> = self.gw.stored.keys().map(|&k| MsgId(k)).collect();
        assert_eq!(stored, pushed, "stored ≠ pushed");
        assert_eq!(self.engine.pending(), 0);
        assert_eq!(self.engine.stats().acknowledged, pushed.len() as u64);
        // Stored byte for byte as pushed.
        for (id, r) in &self.gw.stored {
            let i = u64::from_be_bytes(r.extra[..].try_into().unwrap());
            assert_eq!(r.values, sample(i).values, "reading {id}");
        }
    }

    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}
