//! Test support for iotseal (publish = false): outside vector loaders, deterministic
//! randomness, provider lists.
#![forbid(unsafe_code)]
#![allow(missing_docs)]
