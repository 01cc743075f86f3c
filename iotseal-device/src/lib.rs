//! iotseal device SDK: a device that pins its gateway, runs the handshake, seals batched
//! readings, and keeps every reading until the gateway acknowledges it.
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use iotseal_device::{DeviceClient, DeviceOptions, GatewayPins, IdentityFile, IdentityFileExt, HttpsTransport};
//! use iotseal_proto::reading::SensorKind;
//! let pins = GatewayPins::load("gateway.pub.toml".as_ref())?;
//! let identity = IdentityFile::load("device.key".as_ref())?;
//! let transport = HttpsTransport::new(&pins)?;
//! let mut device = DeviceClient::new(identity.device_config(&pins, None)?, transport, DeviceOptions::default());
//! device.push(vec![(SensorKind::Temperature, 21.5)], Vec::new())?;
//! let report = device.flush().await?;
//! println!("{} readings acknowledged", report.acknowledged);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod client;
mod clock;
mod files;
mod https;
pub mod load;
mod mqtt;
mod pin;
pub mod queue;
pub mod sim;
mod transport;

pub use admin::{AdminClient, StoredReadingJson};
pub use client::{DeviceClient, DeviceError, DeviceOptions, DeviceStats, FlushReport};
pub use clock::Clock;
pub use files::{FileError, GatewayPins, IdentityFile, IdentityFileExt, PinnedIdentity};
pub use https::HttpsTransport;
pub use iotseal_device_core::Endpoint;
pub use mqtt::{MqttConfig, MqttTransport};
pub use pin::pinned_tls_config;
pub use queue::{AckWriteError, DurableQueue, PendingReading, PushError, QueueFull, SyncPolicy};
pub use transport::{BoxFuture, Reply, Transport, TransportError};
