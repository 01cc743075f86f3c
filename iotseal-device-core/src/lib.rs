//! iotseal-device-core: the device side of the iotseal protocol as a sans-IO engine
//! (`no_std` + alloc), in the manner of quinn-proto. It holds everything a device does apart
//! from moving bytes: identity and pins, the bounded reading queue and message ids, the
//! handshake with its retries and clock adoption, sealing batches of readings, opening
//! acknowledgements, re-sending what was not acknowledged, key updates, session expiry and
//! backoff. A driver (the tokio SDK, the load generator, the lab, an in-memory test pair, a
//! firmware loop) only carries [`Transmit`]s to the gateway and answers back.
//!
//! # State machine
//!
//! ```text
//!            push / connect
//!   Idle ───────────────────▶ Hello ──Retry (Clock | KeyShare)──▶ Hello (M1', at once)
//!    ▲  ▲                       │ M2 verified (clock adopted if the round trip ≤ skew/2)
//!    │  │                       ▼
//!    │  │                    Finish: M3 + records sealed in the new session
//!    │  │                       │ authenticated ack
//!    │  │                       ▼
//!    │  └── session lost ──── Open: records requests, acks forget readings
//!    │      (UnknownSession,      key updates by the session's policy
//!    │       SessionEnded,        re-handshake at expiry / sequence or epoch budget end
//!    │       expiry, ...)
//!    └── resume ── Refused (terminal: NoCommonSuite, or AuthFailed during the handshake)
//! ```
//!
//! - **One request in flight.** [`Engine::poll_transmit`] gives at most one request until
//!   its outcome is reported with [`Engine::handle_response`] or
//!   [`Engine::handle_transport_error`]; then none until any backoff is over.
//! - **Handshake messages are resent with the same bytes** (docs/protocol.md §9.2) after a
//!   transport failure or Busy, at most `handshake_resends` times and within `skew_secs` of
//!   their first sending; then the handshake starts over.
//! - **Readings are forgotten only when an acknowledgement names a record that carried
//!   them.** Records are never resent: after a lost answer the readings are sealed again in
//!   new records (new sequence numbers, §9.2), and the engine remembers every unacknowledged
//!   record of the session (within the gateway's 1024-wide window), so a late or repeated
//!   acknowledgement of an earlier copy counts too; each message id is reported once in
//!   [`Event::Acknowledged`]. The gateway stores each (device, message id) once.
//! - **Refusals** (docs/protocol.md §18.9). NoCommonSuite, and AuthFailed during the
//!   handshake (after `auth_failed_retries` fresh attempts, 0 by default), are terminal
//!   ([`Event::Refused`]): the engine stops until [`Engine::resume`]. Busy and transport
//!   failures back off (exponential with jitter from the provider's random source, at least
//!   `Retry-After`; acknowledged readings reset it). UnknownSession and SessionEnded drop the
//!   session and handshake again at once (with backoff if that happens again before any
//!   progress). Other refusals of records (AuthFailed, Malformed, Stale) drop the session and
//!   back off; Replay keeps it. A 413 halves the request budget.
//! - **Time.** Every call takes the caller's `now`. The engine adds the clock correction
//!   adopted from a verified M2 ([`Engine::clock_offset_ms`], §10) before giving time to
//!   the core; the times it returns ([`Engine::poll_timeout`], [`Event::BackingOff`]) are
//!   on the caller's clock. `now` must not go backwards during a handshake.
//! - **Randomness** (handshake keys, nonces, backoff jitter) comes from the provider.
//! - **Persistence** is the driver's: the queue is in memory. A driver that keeps readings
//!   across restarts journals each push ([`Engine::reading`] gives the stamped reading) and
//!   each [`Event::Acknowledged`], and gives the survivors back with [`Engine::restore`].
//!   Sessions are never persisted (docs/protocol.md §9.4).
//!
//! # Driver contract
//!
//! ```text
//! loop {
//!     engine.push(now, sample)?;                       // whenever readings come
//!     while let Some(t) = engine.poll_transmit(now) {  // at most one
//!         match transport.send(t.endpoint, t.body) {   // HTTP POST t.endpoint.path(), or MQTT
//!             Ok(answer) => engine.handle_response(now, answer),  // Response::Status / Payload
//!             Err(_) => engine.handle_transport_error(now),
//!         }
//!     }
//!     while let Some(event) = engine.poll_event() { /* log, persist, count */ }
//!     sleep_until(engine.poll_timeout().min(next reading));  // then handle_timeout(now)
//! }
//! ```
//!
//! Over MQTT (docs/protocol.md §17) a request goes to `PREFIX/hs/CLIENT` or
//! `PREFIX/rec/CLIENT` ([`Endpoint::mqtt_kind`]) with a response topic and correlation
//! data; the answer published back with that correlation data is [`Response::Payload`] (a
//! refusal is the 2-byte alert as the whole payload), and no answer within the timeout is a
//! transport error. Sessions over MQTT should set `session.max_record_age_secs = None`.
//!
//! ```
//! use iotseal_device_core::{Engine, EngineConfig, Response, Sample};
//! use iotseal_proto::handshake::PinnedKey;
//! use iotseal_proto::reading::SensorKind;
//! use iotseal_proto::{SigAlg, Time};
//!
//! let provider = iotseal_crypto_rustcrypto::default_provider();
//! let sig = provider.signature(SigAlg::Ed25519).unwrap();
//! let gateway_key = sig.generate(provider.random).unwrap();
//! let pins = vec![PinnedKey { alg: SigAlg::Ed25519, public_key: gateway_key.public_key() }];
//! let identity = sig.generate(provider.random).unwrap();
//! let mut engine = Engine::new(EngineConfig::new(b"sensor-1".to_vec(), identity, pins), provider).unwrap();
//!
//! let now = Time::from_secs(1_767_225_600);
//! let sample = Sample { values: vec![(SensorKind::Temperature, 21.5)], ..Sample::default() };
//! let id = engine.push(now, sample).unwrap();
//! let hello = engine.poll_transmit(now).unwrap();
//! assert_eq!(hello.endpoint.path(), "/v1/handshake");
//! assert!(engine.poll_transmit(now).is_none(), "one request in flight");
//! // The gateway is busy: 503 with a Busy alert and Retry-After: 1. The engine backs off.
//! let busy = Response::Status { status: 503, body: &[0x7f, 6], retry_after_secs: Some(1) };
//! engine.handle_response(now, busy);
//! assert!(engine.poll_transmit(now).is_none());
//! let later = engine.poll_timeout().unwrap();
//! assert!(later.millis_since(now) >= 1000, "at least Retry-After");
//! assert!(engine.poll_transmit(later).is_some(), "the same hello again");
//! assert_eq!(engine.pending(), 1, "reading {id} stays queued");
//! ```
//!
//! Secrets (handshake and traffic keys) live in the core's `DeviceHandshake` and `Session`,
//! which wipe them on drop; the plaintext of each record is built in a buffer wiped on drop.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod acks;
mod backoff;
mod config;
mod engine;
mod event;
#[cfg(feature = "files")]
pub mod files;
#[cfg(feature = "loopback")]
pub mod loopback;
mod queue;
mod seqmap;

pub use acks::{Acks, open_acks};
pub use config::{ConfigError, EngineConfig, MIN_REQUEST_LEN};
pub use engine::{Endpoint, Engine, Response, Transmit};
pub use event::{Cause, Event, SessionEnd, Stats};
pub use queue::{MsgId, PushError, Sample};
