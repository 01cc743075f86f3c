//! The files a device uses: [`iotseal_device_core::files`] (the one reader of
//! `gateway.pub.toml` and device identity files), plus configurations on the SDK's default
//! provider ([`crate::default_provider`]).

use iotseal_proto::Suite;
use iotseal_proto::handshake::DeviceConfig;

pub use iotseal_device_core::files::{FileError, GatewayPins, IdentityFile, PinnedIdentity};

/// The SDK's default provider for an identity file.
pub trait IdentityFileExt {
    /// The core configuration: this identity, the pins, and `offers` (default: the default
    /// suite with this identity's algorithm), on [`crate::default_provider`] (aws-lc-rs with
    /// the default feature `aws-lc`, else RustCrypto).
    ///
    /// # Errors
    /// A bad key or pin, or a configuration the core refuses.
    fn device_config(
        &self,
        pins: &GatewayPins,
        offers: Option<Vec<Suite>>,
    ) -> Result<DeviceConfig, FileError>;
}

impl IdentityFileExt for IdentityFile {
    fn device_config(
        &self,
        pins: &GatewayPins,
        offers: Option<Vec<Suite>>,
    ) -> Result<DeviceConfig, FileError> {
        self.device_config_with(crate::default_provider(), pins, offers)
    }
}
