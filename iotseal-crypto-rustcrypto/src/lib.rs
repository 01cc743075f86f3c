//! iotseal CryptoProvider on RustCrypto crates (pure Rust, no_std + alloc).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
