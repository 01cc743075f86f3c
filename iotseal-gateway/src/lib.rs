//! iotseal-gateway: runs the gateway role of the protocol core over HTTP/1.1 + TLS 1.3,
//! verifies and stores readings durably, manages devices, sessions and keys.
//!
//! ```text
//!  device ──TLS 1.3──▶ hyper/axum ──▶ POST /v1/handshake ──▶ HandshakeServer (std Mutex)
//!                                 └─▶ POST /v1/records   ──▶ SessionTable ─▶ Session (per-session lock)
//!                                                              │ open → store_readings → accept → seal_ack
//!                                                              ▼
//!                                                           Storage (SQLite)
//!  admin ──token──▶ /v1/devices ──▶ Registry (cache of storage) ──▶ revocation ends sessions
//! ```
//!
//! Start a gateway in-process with [`Gateway::start`]; it returns once listening, with the
//! bound address. [`GatewayHandle::shutdown`] stops accepting, lets in-flight requests finish
//! and flushes storage.
//!
//! ```no_run
//! # async fn example() -> Result<(), iotseal_gateway::GatewayError> {
//! use iotseal_gateway::{Gateway, Settings};
//!
//! let mut settings = Settings::load("gw/gateway.toml".as_ref())?;
//! settings.set("listen", "127.0.0.1:0")?; // any free port
//! let gw = Gateway::start(settings).await?;
//! println!("listening on {}", gw.url());
//! // ... serve until told to stop, then:
//! gw.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! HTTP binding (see `docs/protocol.md` for the messages):
//!
//! | Route | Body | Answer |
//! |-------|------|--------|
//! | `POST /v1/handshake` | M1, or M3 + batch of records | Retry / M2, or a batch with the ack record |
//! | `POST /v1/records` | batch of records | batch of ack records (one per session) |
//! | `GET /healthz`, `GET /metrics` | | `ok`, OpenMetrics text |
//! | `/v1/devices...`, `GET /v1/cluster` | admin JSON, bearer token | |
//! | `GET /v1/openapi.json` | bearer token | the admin API's OpenAPI 3.1 document ([`openapi_json`]) |
//! | `/dashboard...` | live dashboard (see [`dashboard`]), admin token | HTML, JSON, event stream |
//!
//! Refusals are answered with an alert body (`0x7f`, code) and the status of
//! [`http::status_for`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Layers, lowest first; a module imports only modules of lower layers (checked by the test
// `no_import_cycles` in tests/layers.rs):
// 1. leaves: addrlimit, client, clock, keys, metrics, proxy_protocol, ratelimit, settings, tls
//    (and the storage crate)
// 2. registry, sessions: the devices and the session table
// 3. pipeline: the engine every binding enters
// 4. cluster: routes requests to the node that owns them, serves forwarded ones
// 5. admin, dashboard: the operator's API and page
// 6. http, mqtt: the bindings
// 7. server (composition root), local
mod addrlimit;
mod admin;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod dashboard;
pub mod http;
pub mod keys;
pub mod local;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod registry;
pub mod server;
pub mod sessions;
pub mod settings;
pub mod tls;

pub use iotseal_storage as storage;

use std::fmt;

pub use admin::openapi_json;
pub use server::{Gateway, GatewayBuilder, GatewayHandle, open_storage, serve};
pub use settings::{Settings, StorageSync};

/// What can stop the gateway from starting or running. Details are for the operator's logs.
#[derive(Debug)]
pub enum GatewayError {
    /// The configuration is invalid.
    Config(String),
    /// An identity key could not be loaded.
    Key(String),
    /// TLS setup failed.
    Tls(String),
    /// Storage failed.
    Storage(storage::StorageError),
    /// I/O (binding the socket, reading files).
    Io(std::io::Error),
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(m) => write!(f, "configuration: {m}"),
            Self::Key(m) => write!(f, "identity key: {m}"),
            Self::Tls(m) => write!(f, "TLS: {m}"),
            Self::Storage(e) => write!(f, "{e}"),
            Self::Io(e) => write!(f, "I/O: {e}"),
        }
    }
}

impl std::error::Error for GatewayError {}

impl From<std::io::Error> for GatewayError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<storage::StorageError> for GatewayError {
    fn from(e: storage::StorageError) -> Self {
        Self::Storage(e)
    }
}
