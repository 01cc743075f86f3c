//! iotseal device SDK: a device that pins its gateway, runs the handshake, seals batched
//! readings, and keeps every reading until the gateway acknowledges it: an async driver over
//! the sans-IO device engine ([`iotseal_device_core::Engine`]).
//!
//! Feature `aws-lc` (default): aws-lc-rs for the protocol and for TLS. Without it
//! (`--no-default-features --features ring`) the SDK uses the RustCrypto provider and rustls
//! on ring, with the same certificate pin.
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
mod mqtt;
mod pin;
pub mod queue;
pub mod sim;
mod transport;

pub use admin::{AdminClient, StoredReadingJson};
pub use client::{
    DeviceClient, DeviceError, DeviceOptions, DeviceStats, FlushReport, engine_config,
};
pub use clock::Clock;
pub use files::{FileError, GatewayPins, IdentityFile, IdentityFileExt, PinnedIdentity};
pub use https::HttpsTransport;
/// The sans-IO device engine this SDK drives, for drivers of their own (the threat lab's
/// hand-driven devices): `iotseal_device::engine::Engine`.
pub use iotseal_device_core as engine;
pub use iotseal_device_core::Endpoint;
pub use mqtt::{MqttConfig, MqttTransport};
pub use pin::{pinned_tls_config, tls_provider};
pub use queue::{AckWriteError, DurableQueue, PendingReading, PushError, QueueFull, SyncPolicy};
pub use transport::{BoxFuture, Reply, Transport, TransportError};

/// The SDK's protocol crypto provider: aws-lc-rs with the feature `aws-lc` (the default),
/// else RustCrypto (pure Rust). Identity files and MQTT client ids use it.
pub fn default_provider() -> iotseal_proto::crypto::CryptoProvider {
    #[cfg(feature = "aws-lc")]
    return iotseal_crypto_awslc::default_provider();
    #[cfg(not(feature = "aws-lc"))]
    return iotseal_crypto_rustcrypto::default_provider();
}
