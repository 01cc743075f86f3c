//! iotseal-python: the extension module `iotseal._native` of the Python package `iotseal`.
//!
//! ```text
//!   Python application
//!        │ push / push_many / flush                          python/iotseal/__init__.py
//!   iotseal.Device ── http.client + ssl, certificate pin, keep-alive, Retry-After, timeouts
//!        │ push · poll_transmit · handle_response · poll_event · poll_timeout
//!   iotseal._native.Engine (this crate) ─▶ iotseal_device_core::Engine on the RustCrypto provider
//! ```
//!
//! This crate only converts: Python values to [`iotseal_device_core::Sample`]s, the engine's
//! [`iotseal_device_core::Transmit`]s to `(path, bytes)`, its events to small frozen classes
//! (`iotseal.events`). Everything the protocol does stays in the engine; every byte on the
//! network is moved by the pure-Python driver (or by the application's own transport: MQTT,
//! a serial link). `now` is milliseconds since the Unix epoch; every method that takes one
//! reads the system clock when it is left out.
//!
//! Errors raised here are the classes of `iotseal/_errors.py` (`ConfigError`, `QueueFull`),
//! looked up when raised, and `ValueError`/`TypeError` for arguments.
//!
//! Built by maturin (`pyproject.toml`; the `abi3` feature gives one wheel for CPython ≥ 3.10).
//! A plain `cargo build` links the build machine's libpython and is only a compile check.

mod engine;
mod events;
mod loopback;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::Stats>()?;
    events::register(m)?;
    m.add_class::<loopback::LoopbackGateway>()?;
    m.add_function(wrap_pyfunction!(loopback::rust_engine_rate, m)?)?;
    m.add("SENSORS", PyTuple::new(m.py(), engine::sensor_names())?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
