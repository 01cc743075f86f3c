//! Test support for iotseal (publish = false): outside vector loaders, deterministic
//! randomness, provider lists.
#![forbid(unsafe_code)]
#![allow(missing_docs)]

pub mod rng;
pub mod vectors;

use iotseal_proto::crypto::CryptoProvider;

/// Every provider built into the workspace, with its default (system) randomness.
pub fn providers() -> Vec<CryptoProvider> {
    vec![
        iotseal_crypto_rustcrypto::default_provider(),
        iotseal_crypto_awslc::default_provider(),
    ]
}
pub mod pair;
pub mod protocol_vectors;
pub mod scenario_vectors;
