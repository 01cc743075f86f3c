//! The algorithms this build carries (cargo features) and the suite the device offers.
//!
//! The RustCrypto provider is a struct of `&'static dyn` algorithm lists; this crate builds its
//! own lists, so an algorithm left out here is never referenced and the linker drops its code
//! (docs/footprint.md).

#[cfg(feature = "std")]
use iotseal_crypto_rustcrypto::OsRandom;
use iotseal_crypto_rustcrypto::{
    ChaCha20Poly1305, Ed25519, HkdfSha256, HmacSha256, Sha256, X25519,
};
use iotseal_proto::crypto::{
    CryptoProvider, KeyExchange, RecordProtection, SecureRandom, SignatureAlgorithm,
};
use iotseal_proto::suite::{AeadId, KemId};
use iotseal_proto::{SigAlg, Suite};

static KEMS: &[&dyn KeyExchange] = &[
    &X25519,
    #[cfg(feature = "hybrid")]
    &iotseal_crypto_rustcrypto::MlKem768,
    #[cfg(feature = "all-algorithms")]
    &iotseal_crypto_rustcrypto::P256,
];

static SIGNATURES: &[&dyn SignatureAlgorithm] = &[
    &Ed25519,
    #[cfg(feature = "all-algorithms")]
    &iotseal_crypto_rustcrypto::EcdsaP256,
    #[cfg(feature = "all-algorithms")]
    &iotseal_crypto_rustcrypto::MlDsa65,
];

static AEADS: &[&dyn RecordProtection] = &[
    &ChaCha20Poly1305,
    #[cfg(feature = "hybrid")]
    &iotseal_crypto_rustcrypto::Aes256Gcm,
    #[cfg(feature = "all-algorithms")]
    &iotseal_crypto_rustcrypto::Aes128Gcm,
    #[cfg(feature = "all-algorithms")]
    &iotseal_crypto_rustcrypto::Aes256CtrHmacSha256,
];

/// The provider of this build: the algorithms the features select, with `random`.
pub(crate) const fn provider(random: &'static dyn SecureRandom) -> CryptoProvider {
    CryptoProvider {
        name: "rustcrypto",
        kems: KEMS,
        signatures: SIGNATURES,
        aeads: AEADS,
        hash: &Sha256,
        hmac: &HmacSha256,
        hkdf: &HkdfSha256,
        random,
    }
}

/// The provider with the operating system's random source.
#[cfg(feature = "std")]
pub(crate) const PROVIDER: CryptoProvider = provider(&OsRandom);

/// The one suite offered with an identity of algorithm `sig`: the default suite
/// (`x25519mlkem768/<sig>/aes256gcm`) with the `hybrid` feature, else
/// `x25519/<sig>/chacha20poly1305`.
pub(crate) fn offer(sig: SigAlg) -> Suite {
    if cfg!(feature = "hybrid") {
        Suite {
            sig,
            ..Suite::DEFAULT
        }
    } else {
        Suite {
            kem: KemId::X25519,
            sig,
            aead: AeadId::ChaCha20Poly1305,
        }
    }
}

/// The suites this build can offer, as text (for the version string and error messages).
pub(crate) const ALGORITHMS: &str = if cfg!(feature = "all-algorithms") {
    "all algorithms"
} else if cfg!(feature = "hybrid") {
    "hybrid: x25519mlkem768, ed25519, aes256gcm, chacha20poly1305"
} else {
    "classical: x25519, ed25519, chacha20poly1305"
};
