//! The honest devices of the lab. [`LabDevice`] drives the device engine
//! (`iotseal-device-core`, the one place the device side of the protocol is written) request
//! by request, so an attack can see each message and the exact error the device reports, and
//! takes the session out of it once the handshake is complete: the attacks craft records on it
//! by hand (replayed, re-dated, held back, with chosen sequence numbers). The SDK's
//! `DeviceClient` is used where the device's own retry logic matters. Every reading an honest
//! device creates is written to the [`Ledger`], against which storage is checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotseal_device::engine::{Engine, EngineConfig, Event, MsgId, open_acks};
use iotseal_device::{
    Clock, DeviceClient, DeviceOptions, GatewayPins, HttpsTransport, IdentityFile, IdentityFileExt,
    Transport, TransportError,
};
use iotseal_proto::handshake::DeviceConfig;
use iotseal_proto::handshake::messages::msg_type;
use iotseal_proto::reading::{Reading, SensorKind, encode_batch};
use iotseal_proto::record::{ContentType, Session, batch};
use iotseal_proto::{Refusal, SigAlg, Suite, Time};

use crate::LabError;

/// What honest devices sent: device id → message id → encoded reading.
pub(crate) type Ledger = Arc<Mutex<BTreeMap<String, BTreeMap<u64, Vec<u8>>>>>;

pub(crate) fn ledger_add(l: &Ledger, device: &str, r: &Reading) {
    let mut enc = Vec::new();
    r.encode(&mut enc);
    l.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(device.to_string())
        .or_default()
        .insert(r.msg_id, enc);
}

/// Why a handshake did not complete.
#[derive(Debug)]
pub(crate) enum HsFail {
    /// The device's engine refused an answer (this is where a MITM is caught).
    Device(iotseal_proto::Error),
    /// The gateway refused (alert).
    Refused(Refusal),
    /// No answer.
    Unavailable(String),
}

impl HsFail {
    /// A short label: `device:BadSignature`, `gateway:AuthFailed`, ...
    pub(crate) fn kind(&self) -> String {
        match self {
            Self::Device(e) => {
                let s = format!("{e}");
                let detail = s.rsplit(": ").next().unwrap_or(&s).to_string();
                format!("device refused: {detail}")
            }
            Self::Refused(r) => format!("gateway refused: {r:?}"),
            Self::Unavailable(e) => format!("no answer: {e}"),
        }
    }
}

fn transport_fail(e: TransportError) -> HsFail {
    match e {
        TransportError::Refused(r) => HsFail::Refused(r),
        TransportError::Unavailable(s) => HsFail::Unavailable(s),
    }
}

/// A completed handshake and the bytes of each message as the device saw them.
pub(crate) struct Handshook {
    pub(crate) session: Session,
    /// The hello that got M2 (after a Retry, the retried one, with its cookie).
    pub(crate) m1: Vec<u8>,
    /// The first hello (no cookie): the one a Retry answered, if any.
    pub(crate) first_m1: Vec<u8>,
    pub(crate) m2: Vec<u8>,
    /// M3 with the records sent along.
    pub(crate) m3: Vec<u8>,
    /// The gateway's answer to M3.
    pub(crate) m3_answer: Vec<u8>,
}

/// An honest device: each handshake is driven by a fresh engine (its Retry, clock adoption
/// and records on M3 are the engine's), then the session is taken out for hand-made records.
pub(crate) struct LabDevice {
    pub(crate) id: String,
    pub(crate) identity: IdentityFile,
    /// The handshake configuration each handshake's engine is built from.
    pub(crate) config: Arc<DeviceConfig>,
    pub(crate) transport: HttpsTransport,
    /// The correction adopted from M2 (the engine's clock offset, kept between handshakes).
    clock: Clock,
    ledger: Ledger,
    next_msg: u64,
    /// Value offset: an attacker's made-up readings are recognisable.
    base: f32,
}

impl LabDevice {
    /// A device with a new `alg` identity (not registered), offering `offers` (default: the
    /// default suite), talking to `url` (the proxy).
    pub(crate) fn new(
        id: &str,
        alg: SigAlg,
        offers: Option<Vec<Suite>>,
        pins: &GatewayPins,
        url: &str,
        ledger: &Ledger,
    ) -> Result<Self, LabError> {
        let p = iotseal_crypto_awslc::default_provider();
        let identity =
            IdentityFile::generate(&p, id, alg).map_err(|e| LabError(format!("keygen: {e}")))?;
        Self::with_identity(identity, offers, pins, url, ledger, |_| {})
    }

    /// A device with a given identity; `tweak` adjusts the core configuration.
    pub(crate) fn with_identity(
        identity: IdentityFile,
        offers: Option<Vec<Suite>>,
        pins: &GatewayPins,
        url: &str,
        ledger: &Ledger,
        tweak: impl FnOnce(&mut DeviceConfig),
    ) -> Result<Self, LabError> {
        let mut cfg = identity
            .device_config(pins, offers)
            .map_err(|e| LabError(format!("device config: {e}")))?;
        tweak(&mut cfg);
        let mut tp = pins.clone();
        tp.url = url.to_string();
        let transport = HttpsTransport::new(&tp)
            .map_err(|e| LabError(format!("transport: {e}")))?
            .with_timeout(Duration::from_secs(8));
        // The same device again (another transport, a restart): its message ids go on.
        let next_msg = ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&identity.id)
            .and_then(|m| m.keys().next_back().copied())
            .map_or(1, |m| m + 1);
        Ok(Self {
            id: identity.id.clone(),
            identity,
            config: Arc::new(cfg),
            transport,
            clock: Clock::default(),
            ledger: ledger.clone(),
            next_msg,
            base: 20.0,
        })
    }

    /// A fresh engine for one handshake (nothing queued, no backoff), on this device's clock:
    /// each reading on M3 in a record of its own.
    fn engine(&self) -> Result<Engine, HsFail> {
        let c = &self.config;
        let identity = c
            .provider
            .signature(c.identity.algorithm())
            .and_then(|s| s.load(c.identity.private_bytes().as_bytes()))
            .map_err(|e| HsFail::Unavailable(format!("identity key: {e:?}")))?;
        let mut ec = EngineConfig::new(c.device_id.clone(), identity, c.pins.clone());
        ec.offers = c.offers.clone();
        ec.skew_secs = c.skew_secs;
        ec.session = c.session;
        ec.readings_per_record = 1;
        ec.records_per_request = 64;
        let mut engine =
            Engine::new(ec, c.provider).map_err(|e| HsFail::Unavailable(format!("engine: {e}")))?;
        engine.set_clock_offset_ms(self.clock.offset_ms);
        Ok(engine)
    }

    /// Marks this device's readings as made up by an attacker.
    pub(crate) fn forger(&mut self) {
        self.base = 666.0;
    }

    pub(crate) fn now(&self) -> Time {
        self.clock.now()
    }

    /// `n` new readings (written to the ledger: the honest device sends them).
    pub(crate) fn readings(&mut self, n: usize) -> Vec<Reading> {
        let t = self.now().as_millis();
        (0..n)
            .map(|_| {
                let id = self.next_msg;
                self.next_msg += 1;
                let r = Reading {
                    msg_id: id,
                    time_ms: t,
                    values: vec![
                        (SensorKind::Temperature, self.base + (id % 50) as f32 * 0.1),
                        (SensorKind::Humidity, 40.0 + (id % 7) as f32),
                    ],
                    extra: Vec::new(),
                };
                ledger_add(&self.ledger, &self.id, &r);
                r
            })
            .collect()
    }

    /// A full handshake through the transport, driven by the engine; `piggy` readings ride
    /// on M3. Stops at the first refusal, failure or missing answer (an attack counts each
    /// attempt; the engine's own resends and backoff are the SDK's business).
    pub(crate) async fn handshake(&mut self, piggy: &[Reading]) -> Result<Handshook, HsFail> {
        let mut engine = self.engine()?;
        if !piggy.is_empty() {
            engine
                .restore(MsgId(0), piggy.to_vec())
                .map_err(|e| HsFail::Unavailable(format!("queue: {e}")))?;
        }
        engine.connect();
        // The engine's clock is the system's: it adds the correction itself.
        let system = Clock::default();
        let (mut m1, mut m2, mut m3, mut m3_answer) = (vec![], vec![], vec![], vec![]);
        let mut first_m1 = Vec::new();
        loop {
            let Some(t) = engine.poll_transmit(system.now()) else {
                return Err(HsFail::Unavailable("the engine sent nothing".into()));
            };
            let hello = t.body.first() == Some(&msg_type::HELLO);
            let body = t.body.clone();
            let reply = match self.transport.send(t.endpoint, t.body).await {
                Ok(r) => r,
                Err(e) => {
                    engine.handle_transport_error(system.now());
                    return Err(transport_fail(e));
                }
            };
            engine.handle_response(system.now(), reply.response());
            if let Some(r) = reply.refusal().map_err(transport_fail)? {
                return Err(HsFail::Refused(r));
            }
            if hello {
                if first_m1.is_empty() {
                    first_m1.clone_from(&body);
                }
                (m1, m2) = (body, reply.body().to_vec());
            } else {
                (m3, m3_answer) = (body, reply.body().to_vec());
            }
            let mut complete = false;
            while let Some(event) = engine.poll_event() {
                match event {
                    Event::HandshakeFailed(e) => return Err(HsFail::Device(e)),
                    Event::HandshakeComplete { .. } => complete = true,
                    _ => {}
                }
            }
            if complete {
                self.clock.offset_ms = engine.clock_offset_ms();
                let session = engine
                    .take_session()
                    .ok_or_else(|| HsFail::Unavailable("the session ended at once".into()))?;
                return Ok(Handshook {
                    session,
                    m1,
                    first_m1,
                    m2,
                    m3,
                    m3_answer,
                });
            }
        }
    }

    /// Seals `readings` into one record now (a hand-made record: see the module doc).
    pub(crate) fn seal(&self, s: &mut Session, readings: &[Reading]) -> Vec<u8> {
        self.seal_at(s, self.now(), readings)
    }

    /// Seals `readings` into one record at device time `t`.
    pub(crate) fn seal_at(&self, s: &mut Session, t: Time, readings: &[Reading]) -> Vec<u8> {
        let mut rec = Vec::new();
        let _ = s.seal(t, ContentType::Data, &encode_batch(readings), &mut rec);
        rec
    }

    /// Sends records as one batch.
    pub(crate) async fn send(&self, records: &[Vec<u8>]) -> Result<Vec<u8>, TransportError> {
        let mut body = Vec::new();
        for r in records {
            batch::push(&mut body, r);
        }
        self.transport.records(body).await
    }

    /// The ranges an answer acknowledges (its ack records opened by the engine's
    /// [`open_acks`]).
    pub(crate) fn acks(&self, s: &mut Session, answer: &[u8]) -> Vec<(u64, u64)> {
        open_acks(s, self.now(), answer).ranges
    }
}

/// Whether `seq` is in one of `ranges`.
pub(crate) fn covers(ranges: &[(u64, u64)], seq: u64) -> bool {
    ranges.iter().any(|&(a, b)| (a..=b).contains(&seq))
}

/// An SDK device (its own retries and acknowledgement handling) through `url`.
pub(crate) fn sdk_device(
    identity: &IdentityFile,
    pins: &GatewayPins,
    url: &str,
    tweak: impl FnOnce(&mut DeviceConfig),
    opts: DeviceOptions,
) -> Result<DeviceClient<HttpsTransport>, LabError> {
    let mut cfg = identity
        .device_config(pins, None)
        .map_err(|e| LabError(format!("device config: {e}")))?;
    tweak(&mut cfg);
    let mut tp = pins.clone();
    tp.url = url.to_string();
    let t = HttpsTransport::new(&tp)
        .map_err(|e| LabError(format!("transport: {e}")))?
        .with_timeout(Duration::from_secs(8));
    Ok(DeviceClient::new(cfg, t, opts))
}

/// Queues `n` readings on an SDK device (written to the ledger).
pub(crate) fn sdk_push<T: Transport>(d: &mut DeviceClient<T>, ledger: &Ledger, n: usize) {
    let id = d.id();
    for i in 0..n {
        let t = d.clock().now().as_millis();
        let values = vec![(SensorKind::Pressure, 1000.0 + i as f32)];
        if let Ok(msg_id) = d.push_at(t, values.clone(), Vec::new()) {
            ledger_add(
                ledger,
                &id,
                &Reading {
                    msg_id,
                    time_ms: t,
                    values,
                    extra: Vec::new(),
                },
            );
        }
    }
}

/// SDK options for the lab: small records, one per request, quick give-up.
pub(crate) fn lab_options(flush_timeout: Duration) -> DeviceOptions {
    DeviceOptions {
        readings_per_record: 2,
        records_per_request: 1,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        flush_timeout,
        ..DeviceOptions::default()
    }
}
