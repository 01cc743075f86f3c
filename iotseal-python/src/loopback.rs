//! A gateway in this process (the gateway side of iotseal-proto, answering as
//! docs/protocol.md §18.5–§18.6 say, without storage or a network), for the benchmark that
//! compares the engine driven from Python with the same engine driven from Rust
//! (`examples/bench.py`, docs/performance.md "Devices in Python"), and for tests of the
//! bindings that need no gateway binary. Not a gateway: no registry beyond its one device,
//! no replay answers beyond what the core does, no limits.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use iotseal_device_core::{Endpoint, EngineConfig, Response, Sample};
use iotseal_proto::handshake::messages::encode_alert;
use iotseal_proto::handshake::{
    GatewayConfig, GatewayIdentity, HandshakeServer, HelloReply, PinnedKey, RegisteredDevice,
};
use iotseal_proto::reading::{SensorKind, decode_batch};
use iotseal_proto::record::header::Header;
use iotseal_proto::record::{ContentType, Session, batch};
use iotseal_proto::{Refusal, Suite, Time};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::engine::{Engine, Settings, error, now_or, provider};

/// The HTTP status of a refusal (as the gateway's, docs/protocol.md §18.9).
fn status_for(r: Refusal) -> u16 {
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

/// The gateway side, in Rust.
struct Loop {
    server: HandshakeServer,
    registry: HashMap<Vec<u8>, RegisteredDevice>,
    sessions: BTreeMap<u32, Session>,
    readings: u64,
}

impl Loop {
    /// A gateway and the configuration of one device it knows.
    fn new(suite: Suite) -> Result<(Self, EngineConfig), String> {
        let p = provider();
        let sig = p.signature(suite.sig).map_err(|e| e.to_string())?;
        let gkey = sig.generate(p.random).map_err(|e| e.to_string())?;
        let dkey = sig.generate(p.random).map_err(|e| e.to_string())?;
        let device_id = b"loopback-device".to_vec();
        let mut registry = HashMap::new();
        registry.insert(
            device_id.clone(),
            RegisteredDevice {
                alg: suite.sig,
                public_key: dkey.public_key(),
                revoked: false,
                policy: None,
            },
        );
        let pins = vec![PinnedKey {
            alg: suite.sig,
            public_key: gkey.public_key(),
        }];
        let mut cfg = EngineConfig::new(device_id, dkey, pins);
        cfg.offers = vec![suite];
        let gc = GatewayConfig::new(p, vec![GatewayIdentity::new(&p, gkey)])
            .map_err(|e| e.to_string())?;
        let lp = Self {
            server: HandshakeServer::new(gc),
            registry,
            sessions: BTreeMap::new(),
            readings: 0,
        };
        Ok((lp, cfg))
    }

    fn serve(&mut self, now: Time, endpoint: Endpoint, body: &[u8]) -> (u16, Vec<u8>) {
        let answer = match endpoint {
            Endpoint::Handshake => self.handshake(now, body),
            Endpoint::Records => self.records(now, body),
        };
        match answer {
            Ok(b) => (200, b),
            Err(r) => (status_for(r), encode_alert(r).to_vec()),
        }
    }

    fn handshake(&mut self, now: Time, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        if let Some(a) = self.server.cached_answer(now, body) {
            return Ok(a);
        }
        match body.first() {
            Some(0x01) => {
                let sessions = &self.sessions;
                match self
                    .server
                    .handle_hello(now, body, &|id| sessions.contains_key(&id))
                {
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
                let ack = self.process(now, &mut session, &records, true)?;
                let mut answer = Vec::new();
                batch::push(&mut answer, &ack);
                self.sessions.insert(session.id(), session);
                self.server.remember_answer(now, body, answer.clone());
                Ok(answer)
            }
            _ => Err(Refusal::Malformed),
        }
    }

    fn records(&mut self, now: Time, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let recs = batch::split(body).map_err(|_| Refusal::Malformed)?;
        let first = recs.first().ok_or(Refusal::Malformed)?;
        // The engine puts the records of one session in a request.
        let id = Header::peek_session_id(first).map_err(|_| Refusal::Malformed)?;
        let mut s = self.sessions.remove(&id).ok_or(Refusal::UnknownSession)?;
        let ack = self.process(now, &mut s, &recs, false);
        self.sessions.insert(id, s);
        let mut answer = Vec::new();
        batch::push(&mut answer, &ack?);
        Ok(answer)
    }

    /// Opens records, counts their readings, marks them, and seals an acknowledgement.
    fn process(
        &mut self,
        now: Time,
        s: &mut Session,
        records: &[&[u8]],
        force: bool,
    ) -> Result<Vec<u8>, Refusal> {
        let mut accepted = Vec::new();
        let mut refusal = None;
        let mut buf = Vec::new();
        for r in records {
            buf.clear();
            buf.extend_from_slice(r);
            match s.open(now, &mut buf) {
                Ok(o) if o.content_type == ContentType::Data => match decode_batch(o.plaintext) {
                    Ok(readings) => {
                        self.readings += readings.len() as u64;
                        accepted.push(o.seq);
                    }
                    Err(_) => {
                        refusal.get_or_insert(Refusal::Malformed);
                    }
                },
                Ok(_) => {
                    refusal.get_or_insert(Refusal::AuthFailed);
                }
                Err(e) => {
                    refusal.get_or_insert(e.refusal());
                }
            }
        }
        for seq in &accepted {
            let _ = s.accept(*seq);
        }
        if accepted.is_empty() && !force {
            return Err(refusal.unwrap_or(Refusal::Malformed));
        }
        let mut ack = Vec::new();
        s.seal_ack(now, &mut ack).map_err(|e| e.refusal())?;
        Ok(ack)
    }
}

fn parse_suite(py: Python<'_>, suite: Option<&str>) -> PyResult<Suite> {
    match suite {
        None => Ok(Suite::DEFAULT),
        Some(n) => n
            .parse()
            .map_err(|_| error(py, "ConfigError", format!("unknown suite {n:?}"))),
    }
}

/// A gateway in this process that knows one device, for benchmarks and tests of the
/// bindings without a network (see `examples/bench.py`). It opens records and counts their
/// readings; it stores nothing.
#[pyclass(module = "iotseal._native")]
pub(crate) struct LoopbackGateway {
    inner: Loop,
    config: Option<EngineConfig>,
}

#[pymethods]
impl LoopbackGateway {
    /// A gateway with fresh keys, its device offering `suite` (default
    /// `x25519mlkem768/ed25519/aes256gcm`).
    #[new]
    #[pyo3(signature = (suite=None))]
    fn new(py: Python<'_>, suite: Option<&str>) -> PyResult<Self> {
        let (inner, config) =
            Loop::new(parse_suite(py, suite)?).map_err(|e| error(py, "ConfigError", e))?;
        Ok(Self {
            inner,
            config: Some(config),
        })
    }

    /// The engine of this gateway's device (once). Settings as `Engine.from_files`.
    #[pyo3(signature = (*, queue_capacity=None, readings_per_record=None, records_per_request=None, max_request_len=None))]
    fn engine(
        &mut self,
        py: Python<'_>,
        queue_capacity: Option<usize>,
        readings_per_record: Option<usize>,
        records_per_request: Option<usize>,
        max_request_len: Option<usize>,
    ) -> PyResult<Engine> {
        let config = self
            .config
            .take()
            .ok_or_else(|| PyValueError::new_err("this gateway's engine was already made"))?;
        let s = Settings {
            queue_capacity,
            readings_per_record,
            records_per_request,
            max_request_len,
            suites: None,
            mqtt: false,
        };
        Engine::build(py, config, s, None, None)
    }

    /// Answers a request as the HTTP binding would: `(status, body)`.
    #[pyo3(signature = (path, body, now=None))]
    fn serve<'py>(
        &mut self,
        py: Python<'py>,
        path: &str,
        body: &[u8],
        now: Option<u64>,
    ) -> PyResult<(u16, Bound<'py, PyBytes>)> {
        let endpoint = match path {
            "/v1/handshake" => Endpoint::Handshake,
            "/v1/records" => Endpoint::Records,
            _ => return Err(PyValueError::new_err(format!("no endpoint {path:?}"))),
        };
        let (status, answer) = self.inner.serve(now_or(now), endpoint, body);
        Ok((status, PyBytes::new(py, &answer)))
    }

    /// Readings received in accepted records (a reading sent twice counts twice).
    #[getter]
    fn readings(&self) -> u64 {
        self.inner.readings
    }
}

/// The Rust side of the benchmark: the same loop as `examples/bench.py` drives from
/// Python, on a fresh loopback gateway: after a handshake, `rounds` times push `batch`
/// one-value readings, take the request (`poll_transmit`), let the gateway answer (not
/// timed), hand the answer to the engine and drain its events. Returns the seconds spent in
/// the engine's calls (push, poll_transmit, handle_response, poll_event) and the readings
/// acknowledged.
#[pyfunction]
#[pyo3(signature = (rounds, batch, suite=None))]
pub(crate) fn rust_engine_rate(
    py: Python<'_>,
    rounds: u64,
    batch: usize,
    suite: Option<&str>,
) -> PyResult<(f64, u64)> {
    let (mut gw, config) =
        Loop::new(parse_suite(py, suite)?).map_err(|e| error(py, "ConfigError", e))?;
    let mut engine = Engine::build(py, config, Settings::default(), None, None)?;
    let engine = engine.core_mut();
    let now = now_or(None);
    engine.connect();
    while !engine.is_established() {
        let t = engine
            .poll_transmit(now)
            .ok_or_else(|| PyValueError::new_err("the loopback handshake stalled"))?;
        let (status, body) = gw.serve(now, t.endpoint, &t.body);
        engine.handle_response(now, Response::http(status, &body));
        while engine.poll_event().is_some() {}
    }
    let before = engine.stats().acknowledged;
    let mut spent = Duration::ZERO;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..batch {
            let s = Sample {
                time: None,
                values: vec![(SensorKind::Temperature, 21.5)],
                extra: Vec::new(),
            };
            engine
                .push(now, s)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
        }
        let t = engine.poll_transmit(now);
        spent += start.elapsed();
        let t = t.ok_or_else(|| PyValueError::new_err("no request to send"))?;
        let (status, body) = gw.serve(now, t.endpoint, &t.body);
        let start = Instant::now();
        engine.handle_response(now, Response::http(status, &body));
        while engine.poll_event().is_some() {}
        spent += start.elapsed();
    }
    Ok((spent.as_secs_f64(), engine.stats().acknowledged - before))
}
