//! A gateway in this process (`iotseal_device_core::loopback`: the gateway side of
//! iotseal-proto answering as docs/protocol.md §18.5–§18.6 say, without storage or a network),
//! for the benchmark that compares the engine driven from Python with the same engine driven
//! from Rust (`examples/bench.py`, docs/performance.md "Devices in Python"), and for tests of
//! the bindings that need no gateway binary. Not a gateway: no registry beyond its one device,
//! no limits, nothing stored (readings are counted).

use iotseal_device_core::loopback::Gateway;
use iotseal_device_core::{Endpoint, EngineConfig, Sample, loopback};
use iotseal_proto::Suite;
use iotseal_proto::reading::SensorKind;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::engine::{Engine, Settings, error, now_or, provider};

/// A gateway that keeps nothing (readings counted) and the configuration of its one device.
fn pair(py: Python<'_>, suite: Suite) -> PyResult<(Gateway, EngineConfig)> {
    let p = provider();
    let (mut gw, config) = loopback::pair(p, p, suite, b"loopback-device".to_vec(), |_| {})
        .map_err(|e| error(py, "ConfigError", e.to_string()))?;
    gw.keep = false;
    Ok((gw, config))
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
    inner: Gateway,
    config: Option<EngineConfig>,
}

#[pymethods]
impl LoopbackGateway {
    /// A gateway with fresh keys, its device offering `suite` (default
    /// `x25519mlkem768/ed25519/aes256gcm`).
    #[new]
    #[pyo3(signature = (suite=None))]
    fn new(py: Python<'_>, suite: Option<&str>) -> PyResult<Self> {
        let (inner, config) = pair(py, parse_suite(py, suite)?)?;
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
        let (status, answer) = self.inner.answer(now_or(now), endpoint, body);
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
    let (mut gw, config) = pair(py, parse_suite(py, suite)?)?;
    let mut engine = Engine::build(py, config, Settings::default(), None, None)?;
    let sample = || Sample {
        time: None,
        values: vec![(SensorKind::Temperature, 21.5)],
        extra: Vec::new(),
    };
    let (spent, acked) = loopback::engine_rate(
        engine.core_mut(),
        &mut gw,
        now_or(None),
        rounds,
        batch,
        sample,
    )
    .map_err(PyValueError::new_err)?;
    Ok((spent.as_secs_f64(), acked))
}
