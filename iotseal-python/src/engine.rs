//! `iotseal.Engine`: the sans-IO device engine for Python.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use iotseal_device_core::files::{FileError, GatewayPins, IdentityFile};
use iotseal_device_core::{
    Engine as CoreEngine, EngineConfig, MsgId, PushError, Response, Sample, Stats as CoreStats,
};
use iotseal_proto::reading::SensorKind;
use iotseal_proto::{CryptoProvider, Refusal, Suite, Time};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyType};

use crate::events::{self, refusal_name};

/// The sensor kinds with names, in wire-code order (codes 1 to 12).
const KINDS: [SensorKind; 12] = [
    SensorKind::Temperature,
    SensorKind::Humidity,
    SensorKind::Pressure,
    SensorKind::Latitude,
    SensorKind::Longitude,
    SensorKind::AccelX,
    SensorKind::AccelY,
    SensorKind::AccelZ,
    SensorKind::HeartRate,
    SensorKind::Power,
    SensorKind::Energy,
    SensorKind::Battery,
];

/// The sensor names `push` accepts (besides `other_<code>`), as the gateway writes them.
pub(crate) fn sensor_names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name()).collect()
}

/// The names as interned Python strings: a name written as a literal in Python is the same
/// object, so most lookups are one pointer comparison.
static INTERNED: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();

fn sensor_kind(py: Python<'_>, name: &Bound<'_, PyAny>) -> PyResult<SensorKind> {
    let interned = INTERNED.get_or_init(py, || {
        KINDS
            .iter()
            .map(|k| PyString::intern(py, k.name()).unbind())
            .collect()
    });
    for (i, s) in interned.iter().enumerate() {
        if name.is(s) {
            return Ok(KINDS[i]);
        }
    }
    let Ok(s) = name.cast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "a sensor is a name such as \"temperature\", not {}",
            name.get_type().name()?
        )));
    };
    let s = s.to_cow()?;
    if let Some(k) = KINDS.iter().find(|k| k.name() == s) {
        return Ok(*k);
    }
    if let Some(code) = s.strip_prefix("other_").and_then(|c| c.parse::<u8>().ok())
        && !(1..=12).contains(&code)
    {
        return Ok(SensorKind::from_code(code));
    }
    Err(PyValueError::new_err(format!(
        "unknown sensor {s:?}: one of {}, or other_<code> (0 or 13 to 255)",
        sensor_names().join(", ")
    )))
}

/// The caller's clock: `now` if given, else the system clock (ms since the Unix epoch).
pub(crate) fn now_or(now: Option<u64>) -> Time {
    Time(now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }))
}

/// An exception of `iotseal/_errors.py`, by class name (imported when raised).
pub(crate) fn error(py: Python<'_>, class: &str, msg: String) -> PyErr {
    let cls = py
        .import("iotseal._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
    match cls {
        Ok(cls) => PyErr::from_type(cls, msg),
        Err(e) => e,
    }
}

fn file_error(py: Python<'_>, e: FileError) -> PyErr {
    error(py, "ConfigError", e.to_string())
}

fn push_error(py: Python<'_>, e: PushError) -> PyErr {
    match e {
        PushError::QueueFull { .. } => error(py, "QueueFull", e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// The RustCrypto provider with the operating system's random source.
pub(crate) fn provider() -> CryptoProvider {
    iotseal_crypto_rustcrypto::default_provider()
}

/// The sans-IO device engine (`iotseal_device_core::Engine` on the RustCrypto provider).
///
/// Call order: `push` readings; `poll_transmit` gives at most one request, `(path, body)`;
/// send it and report the outcome with `handle_response` (or `handle_payload` over MQTT)
/// or `handle_transport_error`; drain `poll_event`; when `poll_transmit` gives nothing, wait
/// until `poll_timeout()` (or the next reading) and call `handle_timeout`. `now` is the
/// caller's clock in ms since the Unix epoch (the system clock when left out).
#[pyclass(module = "iotseal", name = "Engine")]
pub(crate) struct Engine {
    inner: CoreEngine,
    url: Option<String>,
    cert_sha256: Option<[u8; 32]>,
}

/// The settings a Python caller may change, checked by the engine.
#[derive(Default)]
pub(crate) struct Settings {
    pub(crate) queue_capacity: Option<usize>,
    pub(crate) readings_per_record: Option<usize>,
    pub(crate) records_per_request: Option<usize>,
    pub(crate) max_request_len: Option<usize>,
    pub(crate) suites: Option<Vec<String>>,
    /// Sessions over a store-and-forward binding (MQTT): no record age check (§17).
    pub(crate) mqtt: bool,
}

impl Engine {
    pub(crate) fn build(
        py: Python<'_>,
        mut config: EngineConfig,
        s: Settings,
        url: Option<String>,
        cert_sha256: Option<[u8; 32]>,
    ) -> PyResult<Self> {
        if let Some(v) = s.queue_capacity {
            config.queue_capacity = v;
        }
        if let Some(v) = s.readings_per_record {
            config.readings_per_record = v;
        }
        if let Some(v) = s.records_per_request {
            config.records_per_request = v;
        }
        if let Some(v) = s.max_request_len {
            config.max_request_len = v;
        }
        if let Some(suites) = s.suites {
            config.offers = suites
                .iter()
                .map(|n| {
                    n.parse::<Suite>().map_err(|_| {
                        error(
                            py,
                            "ConfigError",
                            format!("unknown suite {n:?} (kem/sig/aead)"),
                        )
                    })
                })
                .collect::<PyResult<_>>()?;
        }
        if s.mqtt {
            config.session.max_record_age_secs = None;
        }
        let inner = CoreEngine::new(config, provider())
            .map_err(|e| error(py, "ConfigError", e.to_string()))?;
        Ok(Self {
            inner,
            url,
            cert_sha256,
        })
    }

    fn from_parsed(
        py: Python<'_>,
        pins: GatewayPins,
        identity: IdentityFile,
        s: Settings,
    ) -> PyResult<Self> {
        let cert = pins.cert_sha256().map_err(|e| file_error(py, e))?;
        let config = identity
            .engine_config(&provider(), &pins)
            .map_err(|e| file_error(py, e))?;
        Self::build(py, config, s, Some(pins.url), Some(cert))
    }

    /// The inner engine (for the loopback benchmark).
    pub(crate) fn core_mut(&mut self) -> &mut CoreEngine {
        &mut self.inner
    }
}

fn sample(values: Vec<(SensorKind, f32)>, time_ms: Option<u64>, extra: Option<&[u8]>) -> Sample {
    Sample {
        time: time_ms.map(Time),
        values,
        extra: extra.map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

#[pymethods]
impl Engine {
    /// An engine from a `gateway.pub.toml` and a device identity file (`iotseal device
    /// keygen`). Keyword settings: `queue_capacity`, `readings_per_record`,
    /// `records_per_request`, `max_request_len`, `suites` (list of `kem/sig/aead`), `mqtt`
    /// (sessions over MQTT: a broker stores and forwards, so no record age check, §17).
    #[staticmethod]
    #[pyo3(signature = (pins_path, key_path, *, queue_capacity=None, readings_per_record=None, records_per_request=None, max_request_len=None, suites=None, mqtt=false))]
    #[allow(clippy::too_many_arguments)]
    fn from_files(
        py: Python<'_>,
        pins_path: PathBuf,
        key_path: PathBuf,
        queue_capacity: Option<usize>,
        readings_per_record: Option<usize>,
        records_per_request: Option<usize>,
        max_request_len: Option<usize>,
        suites: Option<Vec<String>>,
        mqtt: bool,
    ) -> PyResult<Self> {
        let pins = GatewayPins::load(&pins_path).map_err(|e| file_error(py, e))?;
        let identity = IdentityFile::load(&key_path).map_err(|e| file_error(py, e))?;
        let s = Settings {
            queue_capacity,
            readings_per_record,
            records_per_request,
            max_request_len,
            suites,
            mqtt,
        };
        Self::from_parsed(py, pins, identity, s)
    }

    /// As `from_files`, from the files' contents (devices that keep them elsewhere).
    #[staticmethod]
    #[pyo3(signature = (pins_toml, key_toml, *, queue_capacity=None, readings_per_record=None, records_per_request=None, max_request_len=None, suites=None, mqtt=false))]
    #[allow(clippy::too_many_arguments)]
    fn from_strings(
        py: Python<'_>,
        pins_toml: &str,
        key_toml: &str,
        queue_capacity: Option<usize>,
        readings_per_record: Option<usize>,
        records_per_request: Option<usize>,
        max_request_len: Option<usize>,
        suites: Option<Vec<String>>,
        mqtt: bool,
    ) -> PyResult<Self> {
        let pins = GatewayPins::from_toml(pins_toml).map_err(|e| file_error(py, e))?;
        let identity = IdentityFile::from_toml(key_toml).map_err(|e| file_error(py, e))?;
        let s = Settings {
            queue_capacity,
            readings_per_record,
            records_per_request,
            max_request_len,
            suites,
            mqtt,
        };
        Self::from_parsed(py, pins, identity, s)
    }

    /// Queues a reading of one value; returns its message id. `time_ms`: when it was taken
    /// (default: the device time at `now`); `extra`: opaque bytes stored with it.
    #[pyo3(signature = (sensor, value, time_ms=None, extra=None, now=None))]
    fn push(
        &mut self,
        py: Python<'_>,
        sensor: &Bound<'_, PyAny>,
        value: f64,
        time_ms: Option<u64>,
        extra: Option<&[u8]>,
        now: Option<u64>,
    ) -> PyResult<u64> {
        let kind = sensor_kind(py, sensor)?;
        let s = sample(vec![(kind, value as f32)], time_ms, extra);
        self.inner
            .push(now_or(now), s)
            .map(|m| m.0)
            .map_err(|e| push_error(py, e))
    }

    /// Queues a reading of several values: a dict `{"temperature": 21.5, ...}` or pairs
    /// `[("temperature", 21.5), ...]` (a sensor may appear twice), at most 32.
    #[pyo3(signature = (values, time_ms=None, extra=None, now=None))]
    fn push_many(
        &mut self,
        py: Python<'_>,
        values: &Bound<'_, PyAny>,
        time_ms: Option<u64>,
        extra: Option<&[u8]>,
        now: Option<u64>,
    ) -> PyResult<u64> {
        let mut vals = Vec::new();
        if let Ok(d) = values.cast::<PyDict>() {
            for (k, v) in d.iter() {
                vals.push((sensor_kind(py, &k)?, v.extract::<f64>()? as f32));
            }
        } else {
            for item in values.try_iter()? {
                let (k, v): (Bound<'_, PyAny>, f64) = item?.extract()?;
                vals.push((sensor_kind(py, &k)?, v as f32));
            }
        }
        let s = sample(vals, time_ms, extra);
        self.inner
            .push(now_or(now), s)
            .map(|m| m.0)
            .map_err(|e| push_error(py, e))
    }

    /// The next request to send, `(path, body)` (`path`: `/v1/handshake` or `/v1/records`;
    /// over MQTT they go to the topics `PREFIX/hs/CLIENT` and `PREFIX/rec/CLIENT`), or None:
    /// one is in flight, the engine is backing off or stopped, or there is nothing to send.
    #[pyo3(signature = (now=None))]
    fn poll_transmit<'py>(
        &mut self,
        py: Python<'py>,
        now: Option<u64>,
    ) -> Option<(&'static str, Bound<'py, PyBytes>)> {
        self.inner
            .poll_transmit(now_or(now))
            .map(|t| (t.endpoint.path(), PyBytes::new(py, &t.body)))
    }

    /// The HTTP answer to the request in flight: status, body, and the `Retry-After` header
    /// in seconds if there was one.
    #[pyo3(signature = (status, body, retry_after=None, now=None))]
    fn handle_response(
        &mut self,
        status: u16,
        body: &[u8],
        retry_after: Option<u32>,
        now: Option<u64>,
    ) {
        self.inner.handle_response(
            now_or(now),
            Response::Status {
                status,
                body,
                retry_after_secs: retry_after,
            },
        );
    }

    /// The MQTT answer to the request in flight: the payload published back with the
    /// request's correlation data (a refusal is the 2-byte alert), docs/protocol.md §17.
    #[pyo3(signature = (payload, now=None))]
    fn handle_payload(&mut self, payload: &[u8], now: Option<u64>) {
        self.inner
            .handle_response(now_or(now), Response::Payload(payload));
    }

    /// The request in flight got no answer (connection failed, reset, timed out).
    #[pyo3(signature = (now=None))]
    fn handle_transport_error(&mut self, now: Option<u64>) {
        self.inner.handle_transport_error(now_or(now));
    }

    /// Timers: ends a backoff that is over, drops an expired session.
    #[pyo3(signature = (now=None))]
    fn handle_timeout(&mut self, now: Option<u64>) {
        self.inner.handle_timeout(now_or(now));
    }

    /// When to call again without input (ms since the Unix epoch, the caller's clock), or
    /// None: only a push or an answer can give work.
    fn poll_timeout(&self) -> Option<u64> {
        self.inner.poll_timeout().map(Time::as_millis)
    }

    /// The next event (`iotseal.events`), oldest first, or None.
    fn poll_event(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.inner
            .poll_event()
            .map(|e| events::to_python(py, e))
            .transpose()
    }

    /// Asks for a handshake even with nothing queued.
    fn connect(&mut self) {
        self.inner.connect();
    }

    /// Leaves the stopped state after a terminal refusal (`events.Refused`).
    fn resume(&mut self) {
        self.inner.resume();
    }

    /// Forgets the session (the next request handshakes again).
    fn drop_session(&mut self) {
        self.inner.drop_session();
    }

    /// A queued reading's encoding as it will be sealed (docs/protocol.md §8.12: message id,
    /// time, values, extra), to journal it; None once acknowledged.
    fn reading<'py>(&self, py: Python<'py>, msg_id: u64) -> Option<Bound<'py, PyBytes>> {
        self.inner.reading(MsgId(msg_id)).map(|r| {
            let mut out = Vec::new();
            r.encode(&mut out);
            PyBytes::new(py, &out)
        })
    }

    /// Counters so far.
    #[getter]
    fn stats(&self) -> Stats {
        Stats::from(self.inner.stats())
    }

    /// Readings waiting for acknowledgement.
    #[getter]
    fn pending(&self) -> usize {
        self.inner.pending()
    }

    /// Whether a request is in flight.
    #[getter]
    fn is_waiting(&self) -> bool {
        self.inner.is_waiting()
    }

    /// Whether a session is open.
    #[getter]
    fn is_established(&self) -> bool {
        self.inner.is_established()
    }

    /// The open session's id.
    #[getter]
    fn session_id(&self) -> Option<u32> {
        self.inner.session_id()
    }

    /// The open session's suite, `kem/sig/aead`.
    #[getter]
    fn suite(&self) -> Option<String> {
        self.inner.suite().map(|s| s.to_string())
    }

    /// The refusal the engine stopped on (`"AuthFailed"`, `"NoCommonSuite"`), if it did.
    #[getter]
    fn refusal(&self) -> Option<String> {
        self.inner.refusal().map(refusal_name)
    }

    /// The device id (as text; ids are UTF-8 in identity files).
    #[getter]
    fn device_id(&self) -> String {
        String::from_utf8_lossy(self.inner.device_id()).into_owned()
    }

    /// The message id the next reading gets.
    #[getter]
    fn next_msg_id(&self) -> u64 {
        self.inner.next_msg_id().0
    }

    /// The clock correction adopted from the gateway (ms added to `now`).
    #[getter]
    fn clock_offset_ms(&self) -> i64 {
        self.inner.clock_offset_ms()
    }

    /// The most bytes a request may have now.
    #[getter]
    fn request_budget(&self) -> usize {
        self.inner.request_budget()
    }

    /// The `url` of the pins file (None for an engine not made from files).
    #[getter]
    fn gateway_url(&self) -> Option<String> {
        self.url.clone()
    }

    /// The certificate pin of the pins file: SHA-256 of the gateway certificate's DER.
    #[getter]
    fn tls_cert_sha256<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.cert_sha256.map(|c| PyBytes::new(py, &c))
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine(device_id={:?}, pending={}, established={})",
            self.device_id(),
            self.inner.pending(),
            self.inner.is_established()
        )
    }
}

/// The engine's counters (`Engine.stats`).
#[pyclass(module = "iotseal", frozen, get_all)]
pub(crate) struct Stats {
    handshake_attempts: u64,
    handshakes: u64,
    hello_retries: u64,
    clock_adoptions: u64,
    requests: u64,
    handshake_resends: u64,
    records_sent: u64,
    readings_sent: u64,
    acknowledged: u64,
    transport_errors: u64,
    bad_answers: u64,
    stray_answers: u64,
    key_updates: u64,
    sessions_lost: u64,
    backoffs: u64,
    queue_full: u64,
    events_dropped: u64,
    /// Refusals by name (`"Busy"`), those that happened.
    refusals: BTreeMap<String, u64>,
}

impl From<&CoreStats> for Stats {
    fn from(s: &CoreStats) -> Self {
        let refusals = (1..=8u8)
            .filter_map(Refusal::from_code)
            .map(|r| (refusal_name(r), s.refusals_of(r)))
            .filter(|(_, n)| *n > 0)
            .collect();
        Self {
            handshake_attempts: s.handshake_attempts,
            handshakes: s.handshakes,
            hello_retries: s.hello_retries,
            clock_adoptions: s.clock_adoptions,
            requests: s.requests,
            handshake_resends: s.handshake_resends,
            records_sent: s.records_sent,
            readings_sent: s.readings_sent,
            acknowledged: s.acknowledged,
            transport_errors: s.transport_errors,
            bad_answers: s.bad_answers,
            stray_answers: s.stray_answers,
            key_updates: s.key_updates,
            sessions_lost: s.sessions_lost,
            backoffs: s.backoffs,
            queue_full: s.queue_full,
            events_dropped: s.events_dropped,
            refusals,
        }
    }
}

#[pymethods]
impl Stats {
    fn __repr__(&self) -> String {
        format!(
            "Stats(requests={}, handshakes={}, records_sent={}, readings_sent={}, acknowledged={}, transport_errors={}, backoffs={}, refusals={:?})",
            self.requests,
            self.handshakes,
            self.records_sent,
            self.readings_sent,
            self.acknowledged,
            self.transport_errors,
            self.backoffs,
            self.refusals
        )
    }
}
