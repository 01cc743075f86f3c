//! The demo's gateway: [`iotseal_gateway::local`] plus the device-side pins.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use iotseal_device::GatewayPins;

/// A running local gateway and what clients need to reach it.
pub(crate) struct LocalGateway {
    pub(crate) handle: iotseal_gateway::server::GatewayHandle,
    pub(crate) pins: GatewayPins,
    pub(crate) token: String,
    pub(crate) dir: PathBuf,
}

/// Starts a gateway in this process with fresh keys in `dir` (see
/// [`iotseal_gateway::local::start_local`]).
pub(crate) async fn start(dir: &Path) -> Result<LocalGateway> {
    let gw = iotseal_gateway::local::start_local(dir, |_| {})
        .await
        .map_err(|e| anyhow!("starting the gateway: {e}"))?;
    let pins: GatewayPins = toml::from_str(&gw.public.to_toml().map_err(|e| anyhow!("{e}"))?)?;
    Ok(LocalGateway {
        handle: gw.handle,
        pins,
        token: gw.token,
        dir: gw.dir,
    })
}

/// A new directory under the system's temporary directory.
pub(crate) fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let p = iotseal_crypto_awslc::default_provider();
    let tag = hex::encode(p.random_vec(6).map_err(|e| anyhow!("{e}"))?);
    let d = std::env::temp_dir().join(format!("{prefix}-{tag}"));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
