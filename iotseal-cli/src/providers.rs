//! Choosing a crypto provider by name.

use anyhow::{Result, bail};
use iotseal_proto::CryptoProvider;

/// Names accepted by `--provider`.
pub(crate) const NAMES: [&str; 2] = ["aws-lc", "rustcrypto"];

/// The provider called `name`, with system randomness.
pub(crate) fn by_name(name: &str) -> Result<CryptoProvider> {
    Ok(match name {
        "aws-lc" => iotseal_crypto_awslc::default_provider(),
        "rustcrypto" => iotseal_crypto_rustcrypto::default_provider(),
        other => bail!("unknown provider {other:?} (expected one of {NAMES:?})"),
    })
}
