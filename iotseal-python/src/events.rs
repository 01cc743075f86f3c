//! The engine's events as Python objects (`iotseal.events`): one frozen class per
//! [`iotseal_device_core::Event`] variant, all subclasses of `iotseal.events.Event`.
//! Refusals, causes and reasons are their names as strings (`"AuthFailed"`, `"Transport"`).

use iotseal_device_core::{Cause, Event as CoreEvent, SessionEnd};
use iotseal_proto::Refusal;
use iotseal_proto::handshake::messages::RetryReason;
use pyo3::prelude::*;

/// The name of a refusal (`"AuthFailed"`), as in docs/protocol.md §4.5.
pub(crate) fn refusal_name(r: Refusal) -> String {
    format!("{r:?}")
}

/// The base class of every event.
#[pyclass(subclass, frozen, module = "iotseal.events")]
pub(crate) struct Event;

/// The gateway acknowledged M3: a session is open.
#[pyclass(extends = Event, frozen, get_all, module = "iotseal.events")]
pub(crate) struct HandshakeComplete {
    session_id: u32,
    suite: String,
    clock_adjusted_ms: Option<i64>,
}

/// The gateway answered a hello with a Retry (`reason`: `"Clock"` or `"KeyShare"`).
#[pyclass(extends = Event, frozen, get_all, module = "iotseal.events")]
pub(crate) struct HelloRetried {
    reason: String,
}

/// The device refused the gateway's answer to a handshake message (`error` is for logs).
#[pyclass(extends = Event, frozen, get_all, module = "iotseal.events")]
pub(crate) struct HandshakeFailed {
    error: String,
}

/// The gateway acknowledged these readings (message ids, each reported once).
#[pyclass(extends = Event, frozen, get_all, module = "iotseal.events")]
pub(crate) struct Acknowledged {
    msg_ids: Vec<u64>,
}

/// A refusal retrying cannot fix: the engine stopped until `Engine.resume()`.
#[pyclass(extends = Event, frozen, get_all, module = "iotseal.events")]
pub(crate) struct Refused {
    refusal: String,
}

/// The session ended (`reason`; `refusal` when the gateway refused a request of it).
#[pyclass(extends = Event, frozen, get_all, module = "iotseal.events")]
pub(crate) struct SessionLost {
    reason: String,
    refusal: Option<String>,
}

/// A key update: records are now sealed under this send epoch.
#[pyclass(extends = Event, frozen, get_all, module = "iotseal.events")]
pub(crate) struct KeyUpdated {
    epoch: u64,
}

/// A request failed; nothing is sent before `until_ms` (the caller's clock).
#[pyclass(extends = Event, frozen, get_all, module = "iotseal.events")]
pub(crate) struct BackingOff {
    until_ms: u64,
    cause: String,
    refusal: Option<String>,
}

/// A push was refused because the queue is full (once until there is room again).
#[pyclass(extends = Event, frozen, module = "iotseal.events")]
pub(crate) struct QueueFull;

macro_rules! reprs {
    ($($t:ident: |$s:ident| $body:expr;)*) => {$(
        #[pymethods]
        impl $t {
            fn __repr__(&self) -> String {
                let $s = self;
                format!("{}({})", stringify!($t), $body)
            }
        }
    )*};
}

reprs! {
    HandshakeComplete: |s| format!(
        "session_id={}, suite={:?}, clock_adjusted_ms={}",
        s.session_id,
        s.suite,
        s.clock_adjusted_ms.map_or("None".into(), |v| v.to_string())
    );
    HelloRetried: |s| format!("reason={:?}", s.reason);
    HandshakeFailed: |s| format!("error={:?}", s.error);
    Acknowledged: |s| format!("msg_ids=<{} ids>", s.msg_ids.len());
    Refused: |s| format!("refusal={:?}", s.refusal);
    SessionLost: |s| format!("reason={:?}, refusal={:?}", s.reason, s.refusal);
    KeyUpdated: |s| format!("epoch={}", s.epoch);
    BackingOff: |s| format!("until_ms={}, cause={:?}, refusal={:?}", s.until_ms, s.cause, s.refusal);
    QueueFull: |_s| "";
}

fn new<T: pyo3::PyClass<BaseType = Event>>(py: Python<'_>, value: T) -> PyResult<Py<PyAny>> {
    let init = PyClassInitializer::from(Event).add_subclass(value);
    Ok(Py::new(py, init)?.into_any())
}

/// The Python object for an event.
pub(crate) fn to_python(py: Python<'_>, e: CoreEvent) -> PyResult<Py<PyAny>> {
    match e {
        CoreEvent::HandshakeComplete {
            session_id,
            suite,
            clock_adjusted_ms,
        } => new(
            py,
            HandshakeComplete {
                session_id,
                suite: suite.to_string(),
                clock_adjusted_ms,
            },
        ),
        CoreEvent::HelloRetried { reason } => new(
            py,
            HelloRetried {
                reason: match reason {
                    RetryReason::Clock => "Clock".into(),
                    RetryReason::KeyShare => "KeyShare".into(),
                    RetryReason::Address => "Address".into(),
                },
            },
        ),
        CoreEvent::HandshakeFailed(err) => new(
            py,
            HandshakeFailed {
                error: err.to_string(),
            },
        ),
        CoreEvent::Acknowledged { msg_ids } => new(
            py,
            Acknowledged {
                msg_ids: msg_ids.into_iter().map(|m| m.0).collect(),
            },
        ),
        CoreEvent::Refused(r) => new(
            py,
            Refused {
                refusal: refusal_name(r),
            },
        ),
        CoreEvent::SessionLost(end) => {
            let (reason, refusal) = match end {
                SessionEnd::Refused(r) => ("Refused", Some(refusal_name(r))),
                SessionEnd::Expired => ("Expired", None),
                SessionEnd::Exhausted => ("Exhausted", None),
                SessionEnd::EpochBudget => ("EpochBudget", None),
                SessionEnd::Closed => ("Closed", None),
                SessionEnd::ReceiveLimit => ("ReceiveLimit", None),
                SessionEnd::Dropped => ("Dropped", None),
                _ => ("Other", None),
            };
            new(
                py,
                SessionLost {
                    reason: reason.into(),
                    refusal,
                },
            )
        }
        CoreEvent::KeyUpdated { epoch } => new(py, KeyUpdated { epoch }),
        CoreEvent::BackingOff { until, cause } => {
            let (cause, refusal) = match cause {
                Cause::Refused(r) => ("Refused", Some(refusal_name(r))),
                Cause::Transport => ("Transport", None),
                Cause::BadAnswer => ("BadAnswer", None),
                Cause::Handshake => ("Handshake", None),
                _ => ("Other", None),
            };
            new(
                py,
                BackingOff {
                    until_ms: until.as_millis(),
                    cause: cause.into(),
                    refusal,
                },
            )
        }
        CoreEvent::QueueFull => new(py, QueueFull),
        // A variant of a later engine version: the base class, so nothing is lost silently
        // in a driver that counts events.
        _ => Ok(Py::new(py, Event)?.into_any()),
    }
}

/// Adds the event classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Event>()?;
    m.add_class::<HandshakeComplete>()?;
    m.add_class::<HelloRetried>()?;
    m.add_class::<HandshakeFailed>()?;
    m.add_class::<Acknowledged>()?;
    m.add_class::<Refused>()?;
    m.add_class::<SessionLost>()?;
    m.add_class::<KeyUpdated>()?;
    m.add_class::<BackingOff>()?;
    m.add_class::<QueueFull>()?;
    Ok(())
}
