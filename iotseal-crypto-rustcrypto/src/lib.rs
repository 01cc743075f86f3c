//! iotseal [`CryptoProvider`] on the RustCrypto crates: pure Rust, `no_std` + `alloc`, no
//! `unsafe` in this crate. This is the device-side provider.
//!
//! | Concern | Algorithms | Crates |
//! |---|---|---|
//! | Key exchange ([`kx`]) | `x25519`, `p256`, `mlkem768` | x25519-dalek, p256, ml-kem |
//! | Signatures ([`sign`]) | `ed25519`, `ecdsa-p256`, `mldsa65` | ed25519-dalek, p256, ml-dsa |
//! | Records ([`aead`]) | `aes128gcm`, `aes256gcm`, `chacha20poly1305`, `aes256ctr-hmacsha256` | aes-gcm, chacha20poly1305, aes + ctr + hmac |
//! | Hashing ([`hash`]) | SHA-256, HMAC-SHA256, HKDF-SHA256 | sha2, hmac, hkdf |
//!
//! The hybrids (`x25519mlkem768`, `ed25519+mldsa65`) are composed by `iotseal-proto` from the
//! basic algorithms above.
//!
//! # Usage
//!
#![cfg_attr(feature = "std", doc = "```")]
#![cfg_attr(not(feature = "std"), doc = "```ignore")]
//! use iotseal_crypto_rustcrypto::{OsRandom, provider};
//! use iotseal_proto::crypto::CryptoProvider;
//! use iotseal_proto::suite::{AeadId, KemId};
//!
//! // On a device, pass your own `SecureRandom` (a hardware TRNG driver, ...).
//! static PROVIDER: CryptoProvider = provider(&OsRandom);
//! assert!(PROVIDER.check().is_ok());
//!
//! // Key exchange: the device starts, the gateway responds, both get the same secret.
//! let kem = PROVIDER.kem(KemId::X25519MlKem768)?;
//! let device = kem.start(PROVIDER.random)?;
//! let gateway = kem.respond(device.share(), PROVIDER.random)?;
//! let secret = device.complete(&gateway.share)?;
//! assert_eq!(secret, gateway.secret);
//!
//! // Record protection with detached tags.
//! let key = PROVIDER.aead(AeadId::ChaCha20Poly1305)?.key(&[7; 32])?;
//! let mut record = *b"telemetry";
//! let tag = key.seal(&[0; 12], b"header", &mut record)?;
//! key.open(&[0; 12], b"header", &mut record, &tag)?;
//! assert_eq!(&record, b"telemetry");
//! # Ok::<(), iotseal_proto::crypto::CryptoError>(())
//! ```
//!
//! With the `std` feature (default), [`default_provider`] uses [`OsRandom`]. Without it the
//! crate is `no_std` and only needs `alloc`; bring a [`SecureRandom`](iotseal_proto::crypto::SecureRandom).
//!
//! # Randomness
//!
//! Key exchanges, key generation and hedged signing draw all their randomness from the
//! `rng` argument, never from a global source, so a seeded generator makes them reproducible
//! (and lets FIPS 203 known-answer tests run through the traits: ML-KEM key generation draws
//! the 64 bytes `d || z`, encapsulation the 32 bytes `m`). See [`kx`] and [`sign`].
//!
//! # Features
//!
//! - `std` (default): [`OsRandom`] (the `getrandom` crate) and [`default_provider`].
//! - `fast` (default): Curve25519 basepoint tables (about 30 KiB of read-only data) for faster
//!   X25519 and Ed25519 key generation and Ed25519 signing. Works without `std`.
//!
//! # Performance
//!
//! On x86-64, poly1305 0.9 picks its AVX2 backend at run time, and in a plain build (no
//! `target-feature` flags) that path is slow for short messages: sealing a 64-byte record with
//! ChaCha20-Poly1305 takes about 1.8 µs, against about 0.25 µs with AES-GCM. Building with
//! `-C target-feature=+avx2` (or `-C target-cpu=native`) brings it to about 0.4 µs, and
//! `--cfg poly1305_backend="soft"` to about 0.5 µs. This crate sets no flags; choose them in
//! the final binary if ChaCha20-Poly1305 throughput on x86-64 hosts matters. Other targets
//! (the microcontrollers this provider is for) use the portable backend anyway.
//!
//! Much of the RustCrypto code is generic and monomorphised in this crate, so debug builds
//! of it are slow even though the workspace optimises dependencies in the dev profile.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod aead;
pub mod hash;
pub mod kx;
#[cfg(feature = "rustls")]
pub mod pin;
pub mod pubkey;
pub mod rng;
pub mod sign;

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tests;

use iotseal_proto::crypto::{
    CryptoProvider, KeyExchange, RecordProtection, SecureRandom, SignatureAlgorithm,
};

pub use aead::{Aes128Gcm, Aes256CtrHmacSha256, Aes256Gcm, ChaCha20Poly1305};
pub use hash::{HkdfSha256, HmacSha256, Sha256};
pub use kx::{MlKem768, P256, X25519};
pub use pubkey::{WeakKey, check_public_key};
#[cfg(feature = "std")]
pub use rng::OsRandom;
pub use sign::{EcdsaP256, Ed25519, MlDsa65};

/// The basic key exchanges: `x25519`, `p256`, `mlkem768`.
pub static KEY_EXCHANGES: &[&dyn KeyExchange] = &[&X25519, &P256, &MlKem768];

/// The basic signature algorithms: `ed25519`, `ecdsa-p256`, `mldsa65`.
pub static SIGNATURES: &[&dyn SignatureAlgorithm] = &[&Ed25519, &EcdsaP256, &MlDsa65];

/// The record protection algorithms: `aes128gcm`, `aes256gcm`, `chacha20poly1305`,
/// `aes256ctr-hmacsha256`.
pub static AEADS: &[&dyn RecordProtection] = &[
    &Aes128Gcm,
    &Aes256Gcm,
    &ChaCha20Poly1305,
    &Aes256CtrHmacSha256,
];

/// The RustCrypto provider (name `rustcrypto`) with the given random source.
pub const fn provider(random: &'static dyn SecureRandom) -> CryptoProvider {
    CryptoProvider {
        name: "rustcrypto",
        kems: KEY_EXCHANGES,
        signatures: SIGNATURES,
        aeads: AEADS,
        hash: &Sha256,
        hmac: &HmacSha256,
        hkdf: &HkdfSha256,
        random,
    }
}

/// The RustCrypto provider with the operating system's random source ([`OsRandom`]).
#[cfg(feature = "std")]
pub const fn default_provider() -> CryptoProvider {
    provider(&OsRandom)
}
