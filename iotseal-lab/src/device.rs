//! The honest devices of the lab. [`LabDevice`] drives the protocol core step by step (so an
//! attack can see each message and the exact error the device reports); the SDK's
//! `DeviceClient` is used where the device's own retry logic matters. Every reading an honest
//! device creates is written to the [`Ledger`], against which storage is checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotseal_device::{
    Clock, DeviceClient, DeviceOptions, GatewayPins, HttpsTransport, IdentityFile, IdentityFileExt,
    Transport, TransportError,
};
use iotseal_proto::handshake::{DeviceConfig, DeviceHandshake, DeviceNext};
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
    /// The device's core refused an answer (this is where a MITM is caught).
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
    pub(crate) m1: Vec<u8>,
    pub(crate) m2: Vec<u8>,
    /// M3 with the records sent along.
    pub(crate) m3: Vec<u8>,
    /// The gateway's answer to M3.
    pub(crate) m3_answer: Vec<u8>,
}

/// An honest device driving the core directly.
pub(crate) struct LabDevice {
    pub(crate) id: String,
    pub(crate) identity: IdentityFile,
    pub(crate) config: Arc<DeviceConfig>,
    pub(crate) transport: HttpsTransport,
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

    /// A full handshake through the transport; `piggy` readings ride on M3.
    pub(crate) async fn handshake(&mut self, piggy: &[Reading]) -> Result<Handshook, HsFail> {
        let now = self.now();
        let (mut hs, mut hello) =
            DeviceHandshake::start(self.config.clone(), now).map_err(HsFail::Device)?;
        let mut retried = false;
        let (est, m2) = loop {
            let answer = self
                .transport
                .handshake(hello.clone())
                .await
                .map_err(transport_fail)?;
            match hs.handle(self.now(), &answer).map_err(HsFail::Device)? {
                DeviceNext::Retry {
                    handshake,
                    hello: h,
                } => {
                    if retried {
                        return Err(HsFail::Unavailable("second retry".into()));
                    }
                    retried = true;
                    hs = handshake;
                    hello = h;
                }
                DeviceNext::Established(e) => break (e, answer),
            }
        };
        if let Some(t) = est.gateway_time {
            let local = self.clock.now();
            self.clock.adopt(t, local);
        }
        let mut session = est.session;
        let mut flight = est.finish.clone();
        for r in piggy {
            let rec = self.seal(&mut session, std::slice::from_ref(r));
            batch::push(&mut flight, &rec);
        }
        let answer = self
            .transport
            .handshake(flight.clone())
            .await
            .map_err(transport_fail)?;
        self.acks(&mut session, &answer);
        Ok(Handshook {
            session,
            m1: hello,
            m2,
            m3: flight,
            m3_answer: answer,
        })
    }

    /// Seals `readings` into one record now.
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

    /// The ranges an answer acknowledges (opening its ack records).
    pub(crate) fn acks(&self, s: &mut Session, answer: &[u8]) -> Vec<(u64, u64)> {
        let now = self.now();
        let mut out = Vec::new();
        let Ok(recs) = batch::split(answer) else {
            return out;
        };
        for r in recs {
            let mut r = r.to_vec();
            let Ok(o) = s.open(now, &mut r) else {
                continue;
            };
            if o.content_type != ContentType::Ack {
                continue;
            }
            let seq = o.seq;
            if let Ok(ranges) = s.parse_ack(o.plaintext) {
                let _ = s.accept(seq);
                out.extend(ranges);
            }
        }
        out
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
