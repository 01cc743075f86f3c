//! The handshake: SIGMA-I shaped, 1.5 round trips, mutually authenticated, hybrid by default.
//!
//! ```text
//! Device                                              Gateway
//! M1 Hello: offers, time, nonce, share, mac1   ──▶   (may answer Retry: cookie)
//!                                              ◀──   M2 GatewayHello: session id, suite, time,
//!                                                    share, {key id, Sig_G, Finished_G}
//! M3 Finish: {device id, Sig_D, Finished_D}    ──▶
//!    [+ first records]                         ◀──   acknowledgement record
//! ```
//! See `docs/protocol.md` for byte layouts, the transcript and every check.

mod cache;
mod config;
mod device;
mod gateway;
mod half_open;
pub mod messages;
mod session_id;
mod transcript;

pub use cache::{ExpiringMap, ResponseCache};
pub use config::{
    DeviceConfig, GatewayConfig, GatewayIdentity, PinnedKey, RegisteredDevice, SuitePolicy, key_id,
    mac1_key,
};
pub use device::{DeviceEstablished, DeviceHandshake, DeviceNext};
pub use gateway::{
    DeviceRegistry, FinishJob, FinishVerified, GatewayEstablished, HandshakeServer, HelloComputed,
    HelloJob, HelloReply, HelloStep,
};
pub use half_open::SourceKey;
pub use session_id::{MAX_PARTITIONS, PartitionSet, SessionIdPolicy};

/// The longest device identifier (its field in M3 is padded to this length).
pub const MAX_DEVICE_ID: usize = 32;

/// Signature context of the gateway's transcript signature.
pub const GATEWAY_SIG_CONTEXT: &[u8] = b"iotseal v1 gateway signature\0";
/// Signature context of the device's transcript signature.
pub const DEVICE_SIG_CONTEXT: &[u8] = b"iotseal v1 device signature\0";
