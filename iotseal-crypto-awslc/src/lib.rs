//! iotseal [`CryptoProvider`] on aws-lc-rs: the fast `std` provider, used on gateways and
//! by default on hosts.
//!
//! [`PROVIDER`] implements every basic algorithm of the protocol; the hybrids
//! (`x25519mlkem768`, `ed25519+mldsa65`) are composed from these by `iotseal-proto`.
//!
//! ```
//! use iotseal_crypto_awslc::PROVIDER;
//! use iotseal_proto::suite::{AeadId, KemId};
//!
//! assert!(PROVIDER.check().is_ok());
//!
//! // A key exchange, device and gateway side.
//! let kem = PROVIDER.kem(KemId::X25519MlKem768)?;
//! let device = kem.start(PROVIDER.random)?;
//! let answer = kem.respond(device.share(), PROVIDER.random)?;
//! let secret = device.complete(&answer.share)?;
//! assert_eq!(secret, answer.secret);
//!
//! // Record protection with a key derived from it.
//! let prk = PROVIDER.hkdf.extract(&[], secret.as_bytes());
//! let mut key = [0u8; 32];
//! PROVIDER.hkdf.expand(prk.as_bytes(), &[b"record key"], &mut key)?;
//! let key = PROVIDER.aead(AeadId::Aes256Gcm)?.key(&key)?;
//! let mut record = *b"telemetry";
//! let tag = key.seal(&[0; 12], b"header", &mut record)?;
//! key.open(&[0; 12], b"header", &mut record, &tag)?;
//! assert_eq!(&record, b"telemetry");
//! # Ok::<(), iotseal_proto::crypto::CryptoError>(())
//! ```
//!
//! # Randomness
//!
//! aws-lc-rs lets raw key material in for some algorithms only. Where it does, the random
//! bytes come from the `rng` argument, so a seeded source gives reproducible output:
//! X25519 and P-256 ephemeral scalars, and the Ed25519, ECDSA P-256 and ML-DSA-65 keys of
//! `generate`. Where it does not, aws-lc's own RNG is used and the `rng` argument is
//! ignored: ML-KEM-768 key generation and encapsulation, ECDSA nonces and ML-DSA's hedged
//! signing randomness (Ed25519 signing is deterministic).
//!
//! # TLS certificate pinning
//!
//! With the feature `rustls` (off by default), the module `pin` is the rustls client side
//! that trusts exactly one certificate, shared by the gateway's clients and the device SDK.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aead;
mod hash;
mod kx;
#[cfg(feature = "rustls")]
pub mod pin;
mod rng;
mod sign;

pub use aead::{Aes128Gcm, Aes256CtrHmacSha256, Aes256Gcm, ChaCha20Poly1305};
pub use hash::{HkdfSha256, HmacSha256, Sha256};
pub use kx::{MlKem768, P256, X25519};
pub use rng::AwsLcRandom;
pub use sign::{EcdsaP256, Ed25519, MlDsa65};

use iotseal_proto::crypto::CryptoProvider;

/// The aws-lc provider, with aws-lc's system random source. Override a field with
/// `CryptoProvider { random: &MY_RNG, ..PROVIDER }`.
pub const PROVIDER: CryptoProvider = CryptoProvider {
    name: "aws-lc",
    kems: &[&X25519, &P256, &MlKem768],
    signatures: &[&Ed25519, &EcdsaP256, &MlDsa65],
    aeads: &[
        &Aes128Gcm,
        &Aes256Gcm,
        &ChaCha20Poly1305,
        &Aes256CtrHmacSha256,
    ],
    hash: &Sha256,
    hmac: &HmacSha256,
    hkdf: &HkdfSha256,
    random: &AwsLcRandom,
};

/// The aws-lc provider ([`PROVIDER`]).
pub fn default_provider() -> CryptoProvider {
    PROVIDER
}

#[cfg(test)]
mod tests;
