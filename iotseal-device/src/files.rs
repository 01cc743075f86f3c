//! The files a device uses: [`iotseal_device_core::files`] (the one reader of
//! `gateway.pub.toml` and device identity files), plus configurations on the aws-lc provider.

use iotseal_proto::Suite;
use iotseal_proto::handshake::DeviceConfig;

pub use iotseal_device_core::files::{FileError, GatewayPins, IdentityFile, PinnedIdentity};

/// The SDK's default provider for an identity file.
pub trait IdentityFileExt {
    /// The core configuration: this identity, the pins, and `offers` (default: the default
    /// suite with this identity's algorithm), on the aws-lc provider.
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
        self.device_config_with(iotseal_crypto_awslc::default_provider(), pins, offers)
    }
}
