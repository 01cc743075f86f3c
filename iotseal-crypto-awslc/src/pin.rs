//! Trusting exactly one TLS certificate (feature `rustls`): the one whose DER has the pinned
//! SHA-256. The verifier is `iotseal_crypto_rustcrypto::pin`, the workspace's one
//! implementation of the pin check (it needs no aws-lc, so the device SDK can use it without
//! this crate); pass it the aws-lc-rs rustls provider.

pub use iotseal_crypto_rustcrypto::pin::pinned_client_config;
