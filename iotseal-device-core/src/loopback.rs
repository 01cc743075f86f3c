//! A gateway in memory, for tests and benchmarks: the gateway side of iotseal-proto
//! processing requests as iotseal-gateway's HTTP and MQTT bindings do (answer cache,
//! acknowledgements only after storing, one store per message id), with fault injection
//! (lost requests and answers, Busy, refusals, corrupted records, a body limit, a clock
//! offset). Feature `loopback` (std), off by default.
//!
//! **Not a gateway to deploy**: it keeps everything in memory, knows only the devices
//! registered on it, has no limits beyond the handshake core's, no persistence, no metrics and
//! no transport. It exists so that a device engine can be driven end to end in one process:
//! this crate's tests, iotseal-c's footprint tests and C benchmark, and iotseal-python's
//! `LoopbackGateway` and benchmark (docs/performance.md "Devices in C", "Devices in Python").
//!
//! ```
//! use iotseal_device_core::loopback;
//! # fn demo(p: iotseal_proto::crypto::CryptoProvider) -> Result<(), Box<dyn std::error::Error>> {
//! let (mut gw, config) = loopback::pair(p, p, iotseal_proto::Suite::DEFAULT, b"dev".to_vec(), |_| {})?;
//! let mut engine = iotseal_device_core::Engine::new(config, p)?;
//! # let now = iotseal_proto::Time(1_767_225_600_000);
//! engine.connect();
//! while let Some(t) = engine.poll_transmit(now) {
//!     let (status, body) = gw.answer(now, t.endpoint, &t.body);
//!     engine.handle_response(now, iotseal_device_core::Response::http(status, &body));
//! }
//! # Ok(()) }
//! ```

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::string::{String, ToString};
use std::time::{Duration, Instant};
use std::vec::Vec;

use alloc::boxed::Box;
use iotseal_proto::crypto::{CryptoProvider, SigningKey};
use iotseal_proto::error::Error;
use iotseal_proto::handshake::messages::encode_alert;
use iotseal_proto::handshake::{
    GatewayConfig, GatewayIdentity, HandshakeServer, HelloReply, PinnedKey, RegisteredDevice,
    SourceKey,
};
use iotseal_proto::reading::{Reading, decode_batch};
use iotseal_proto::record::header::Header;
use iotseal_proto::record::{ContentType, Session, batch};
use iotseal_proto::{Refusal, SigAlg, Suite, Time};

use crate::{Endpoint, Engine, EngineConfig, Response, Sample, Transmit};

/// A gateway and the configuration of one device registered on it, trusting each other: a
/// fresh gateway key (from `gateway_provider`) pinned by the device, a fresh device key (from
/// `device_provider`) registered as `device_id`, the device offering `suite` alone. `tweak`
/// changes the gateway's configuration before its handshake server is made.
pub fn pair(
    gateway_provider: CryptoProvider,
    device_provider: CryptoProvider,
    suite: Suite,
    device_id: Vec<u8>,
    tweak: impl FnOnce(&mut GatewayConfig),
) -> Result<(Gateway, EngineConfig), Error> {
    let (gp, dp) = (gateway_provider, device_provider);
    let sig = suite.sig;
    let gkey: Box<dyn SigningKey> = gp.signature(sig)?.generate(gp.random)?;
    let dkey: Box<dyn SigningKey> = dp.signature(sig)?.generate(dp.random)?;
    let pins = alloc::vec![PinnedKey {
        alg: sig,
        public_key: gkey.public_key(),
    }];
    let dpub = dkey.public_key();
    let mut cfg = EngineConfig::new(device_id.clone(), dkey, pins);
    cfg.offers = alloc::vec![suite];
    let mut gc = GatewayConfig::new(gp, alloc::vec![GatewayIdentity::new(&gp, gkey)])?;
    tweak(&mut gc);
    let mut gw = Gateway::new(gc);
    gw.register(device_id, sig, dpub);
    Ok((gw, cfg))
}

/// Completes a handshake of `engine` with `gw` at `now` (a fresh engine of the pair: no
/// faults, nothing queued). Events are dropped.
pub fn establish(engine: &mut Engine, gw: &mut Gateway, now: Time) -> Result<(), &'static str> {
    engine.connect();
    while !engine.is_established() {
        let t = engine
            .poll_transmit(now)
            .ok_or("the loopback handshake stalled")?;
        let (status, body) = gw.answer(now, t.endpoint, &t.body);
        engine.handle_response(now, Response::http(status, &body));
        while engine.poll_event().is_some() {}
    }
    Ok(())
}

/// The Rust side of the device benchmarks (iotseal-python's `rust_engine_rate`, iotseal-c's
/// `iotseal_bench_rust_rate`; docs/performance.md "Devices in Python", "Devices in C"): after
/// [`establish`], `rounds` times push `batch` readings from `sample`, take the request, let
/// `gw` answer (**not timed**), hand the answer to the engine and drain its events, all at
/// `now`. Returns the time spent in the engine's calls (push, poll_transmit, handle_response,
/// poll_event; building each sample included) and the readings acknowledged meanwhile.
#[allow(
    clippy::disallowed_methods,
    reason = "a benchmark reads the clock to time the engine; the engine itself is given `now`"
)]
pub fn engine_rate(
    engine: &mut Engine,
    gw: &mut Gateway,
    now: Time,
    rounds: u64,
    batch: usize,
    mut sample: impl FnMut() -> Sample,
) -> Result<(Duration, u64), String> {
    establish(engine, gw, now)?;
    let before = engine.stats().acknowledged;
    let mut spent = Duration::ZERO;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..batch {
            engine.push(now, sample()).map_err(|e| e.to_string())?;
        }
        let t = engine.poll_transmit(now);
        spent += start.elapsed();
        let t = t.ok_or("no request to send")?;
        let (status, body) = gw.answer(now, t.endpoint, &t.body);
        let start = Instant::now();
        engine.handle_response(now, Response::http(status, &body));
        while engine.poll_event().is_some() {}
        spent += start.elapsed();
    }
    Ok((spent, engine.stats().acknowledged - before))
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

/// An in-memory gateway with fault injection (module documentation). Its fields are the
/// knobs and the record of what happened.
pub struct Gateway {
    /// The handshake core.
    pub server: HandshakeServer,
    /// The devices it knows, by id.
    pub registry: HashMap<Vec<u8>, RegisteredDevice>,
    /// Its sessions, by id.
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
    /// How answers travel back ([`Gateway::deliver`]).
    pub binding: Binding,
    /// The source key the transport gives with each hello (`handle_hello_from`, as the
    /// gateway's bindings do); `None`: hellos without a source (`handle_hello`).
    pub source: Option<SourceKey>,
    /// Readings received in accepted records (a reading received again counts again).
    pub readings: u64,
    /// Keep what passes through: `requests`, `acks` and `stored` (default). Off, readings
    /// are only counted (`readings`; `duplicates` stays 0) and memory stays flat however
    /// long a benchmark runs.
    pub keep: bool,
}

impl Gateway {
    /// A gateway with no device registered, no fault, over HTTP, keeping what passes through.
    pub fn new(config: GatewayConfig) -> Self {
        Self {
            server: HandshakeServer::new(config),
            registry: HashMap::new(),
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
            readings: 0,
            keep: true,
        }
    }

    /// Registers a device (not revoked, no policy).
    pub fn register(&mut self, device_id: Vec<u8>, alg: SigAlg, public_key: Vec<u8>) {
        self.registry.insert(
            device_id,
            RegisteredDevice {
                alg,
                public_key,
                revoked: false,
                policy: None,
            },
        );
    }

    /// The gateway's clock for the driver's `now` (plus `clock_offset_ms`).
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
        if self.keep {
            self.requests.push(t.clone());
        }
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

    /// Answers a request as the HTTP binding would, `(status, body)`, without the faults
    /// (`busy`, `drop_*`, `corrupt`, `refuse_records`, `max_body`) and without copying it:
    /// what a benchmark calls.
    pub fn answer(&mut self, now: Time, endpoint: Endpoint, body: &[u8]) -> (u16, Vec<u8>) {
        let now = self.now(now);
        let answer = match endpoint {
            Endpoint::Handshake => self.handshake(now, body),
            Endpoint::Records => self.records(now, body),
        };
        match answer {
            Ok(bytes) => (200, bytes),
            Err(r) => (status_for(r), encode_alert(r).to_vec()),
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
                        self.readings += readings.len() as u64;
                        for rd in readings.into_iter().filter(|_| self.keep) {
                            match self.stored.entry(rd.msg_id) {
                                Entry::Occupied(_) => self.duplicates += 1,
                                Entry::Vacant(v) => {
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
            // Opened just now, so inside the window: accepting cannot fail.
            let _ = s.accept(*seq);
        }
        if accepted.is_empty() && replays == 0 && !force {
            return (None, refusal);
        }
        if self.keep {
            self.acks.push(s.window().ranges(32).collect());
        }
        let mut ack = Vec::new();
        match s.seal_ack(now, &mut ack) {
            Ok(_) => (Some(ack), refusal),
            Err(e) => (None, Some(e.refusal())),
        }
    }
}

/// Flips a byte in the tag of the records at `indexes` of a batch (a body that is not a
/// batch of records goes unchanged).
fn corrupt_records(body: &[u8], indexes: &[usize]) -> Vec<u8> {
    let Ok(recs) = batch::split(body) else {
        return body.to_vec();
    };
    let mut out = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let mut r = r.to_vec();
        if indexes.contains(&i)
            && let Some(last) = r.last_mut()
        {
            *last ^= 1;
        }
        batch::push(&mut out, &r);
    }
    out
}
