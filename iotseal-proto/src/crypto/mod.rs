//! The `CryptoProvider`: every primitive the protocol uses, behind traits shaped around the
//! protocol (KEM shares, seal/open with nonce and AAD), not around one library.
//!
//! A provider is a `const`-buildable struct of `&'static dyn` trait objects, so one field can be
//! overridden with `..OTHER` (for example a deterministic [`SecureRandom`] in tests). Providers
//! implement the three basic key exchanges and the three basic signatures; the hybrids
//! (`x25519mlkem768`, `ed25519+mldsa65`) are composed here in the core from those parts, so
//! every provider gets them, with one definition of how the halves are combined.

mod hybrid;

pub use hybrid::{HYBRID_SIG_PREFIX, hybrid_message};

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::suite::{AeadId, KemId, SigAlg};

/// Error from a cryptographic backend. Carries no detail on purpose: details of why a
/// key or signature was refused must not reach a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// A public key, share or ciphertext was malformed or invalid (wrong length, not on the
    /// curve, low order, failed the FIPS 203 encapsulation-key check).
    InvalidKey,
    /// A signature did not verify.
    BadSignature,
    /// An AEAD tag or MAC did not verify.
    DecryptFailed,
    /// A DH produced the all-zero shared secret (low-order peer point).
    ZeroSharedSecret,
    /// An output length was out of range (HKDF).
    InvalidLength,
    /// The random source failed.
    RandomFailed,
    /// The provider does not implement this algorithm.
    Unsupported,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::InvalidKey => "invalid key or share",
            Self::BadSignature => "bad signature",
            Self::DecryptFailed => "decryption failed",
            Self::ZeroSharedSecret => "all-zero shared secret",
            Self::InvalidLength => "invalid length",
            Self::RandomFailed => "random source failed",
            Self::Unsupported => "algorithm not supported by this provider",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CryptoError {}

/// Secret bytes (a shared secret, a PRK, a private key): wiped on drop, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps bytes; they are wiped when the `Secret` drops.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies a slice.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Zeroize for Secret {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

/// A source of cryptographically secure random bytes.
pub trait SecureRandom: Send + Sync + fmt::Debug {
    /// Fills `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError>;
}

/// A key exchange seen as a KEM: the device (initiator) starts with a share, the gateway
/// (responder) answers with its own share or ciphertext and gets the secret at once.
///
/// Implementations must refuse invalid shares (wrong length, point not on the curve, an
/// all-zero X25519 result, an ML-KEM encapsulation key that fails the FIPS 203 §7.2 check).
pub trait KeyExchange: Send + Sync + fmt::Debug {
    /// Which key exchange this is.
    fn id(&self) -> KemId;

    /// Device side: generates a fresh ephemeral key pair.
    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError>;

    /// Gateway side: answers the device's share; returns our share (or ciphertext) and the
    /// shared secret.
    fn respond(
        &self,
        peer_share: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError>;

    /// Test-only: rebuilds an ephemeral key pair from private bytes exported by
    /// [`ActiveKeyExchange::dangerous_private_bytes`] (X25519 and P-256: the 32-byte scalar;
    /// ML-KEM-768: the 2400-byte FIPS 203 decapsulation key). Used to check a provider that
    /// keeps its own randomness against deterministic vectors.
    #[doc(hidden)]
    fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError>;
}

/// The gateway's answer from [`KeyExchange::respond`].
#[derive(Debug)]
pub struct KemResponse {
    /// Share or ciphertext to send to the device.
    pub share: Vec<u8>,
    /// The shared secret.
    pub secret: Secret,
}

/// A device's ephemeral key pair, waiting for the gateway's share.
pub trait ActiveKeyExchange: Send + Sync + fmt::Debug {
    /// Our public share, to send.
    fn share(&self) -> &[u8];

    /// Completes the exchange with the gateway's share or ciphertext. Consumes the key pair.
    fn complete(self: Box<Self>, peer_share: &[u8]) -> Result<Secret, CryptoError>;

    /// Test-only: the private key bytes, in the format that
    /// [`KeyExchange::dangerous_import_ephemeral`] takes.
    #[doc(hidden)]
    fn dangerous_private_bytes(&self) -> Result<Secret, CryptoError>;
}

/// An identity signature algorithm.
pub trait SignatureAlgorithm: Send + Sync + fmt::Debug {
    /// Which algorithm this is.
    fn id(&self) -> SigAlg;

    /// Generates a new key pair from the random source.
    fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError>;

    /// Loads a private key: Ed25519 the 32-byte seed, ECDSA P-256 the 32-byte big-endian
    /// scalar, ML-DSA-65 the 32-byte seed ξ (FIPS 204).
    fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError>;

    /// Verifies `sig` over `msg` with `public` (Ed25519: 32 bytes, strict verification as
    /// ed25519-dalek's `verify_strict`; ECDSA: 65-byte uncompressed point, 64-byte r||s;
    /// ML-DSA-65: 1952-byte key, empty context).
    fn verify(&self, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError>;
}

/// A private signing key.
pub trait SigningKey: Send + Sync + fmt::Debug {
    /// The algorithm.
    fn algorithm(&self) -> SigAlg;

    /// The public key, encoded as [`SignatureAlgorithm::verify`] takes it.
    fn public_key(&self) -> Vec<u8>;

    /// Signs `msg`. ECDSA and ML-DSA sign hedged (deterministic plus fresh randomness from
    /// `rng`, where the backend accepts it); Ed25519 is deterministic.
    fn sign(&self, msg: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError>;

    /// The private key bytes, as [`SignatureAlgorithm::load`] takes them.
    fn private_bytes(&self) -> Secret;
}

/// A record protection algorithm (AEAD, or encrypt-then-MAC with the same interface).
pub trait RecordProtection: Send + Sync + fmt::Debug {
    /// Which algorithm this is.
    fn id(&self) -> AeadId;

    /// Builds a key; `key.len()` is [`AeadId::key_len`].
    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError>;
}

/// Tag length of every record protection algorithm.
pub const TAG_LEN: usize = 16;

/// Nonce length of every record protection algorithm.
pub const NONCE_LEN: usize = 12;

/// A record key. Implementations wipe the key on drop.
///
/// For `aes256ctr-hmacsha256` the key is `enc_key (32) || mac_key (32)`; the keystream is
/// AES-256-CTR with the 16-byte counter block `nonce || be32(counter)`, counter starting at 0;
/// the tag is the first 16 bytes of
/// HMAC-SHA256(mac_key, nonce || be64(len(aad)) || aad || ciphertext),
/// checked in constant time before decrypting.
pub trait RecordKey: Send + Sync + fmt::Debug {
    /// Encrypts `in_out` in place; returns the tag.
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError>;

    /// Verifies `tag` and decrypts `in_out` in place. On error `in_out` holds no plaintext.
    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError>;
}

/// Output length of the hash (SHA-256).
pub const HASH_LEN: usize = 32;

/// SHA-256.
pub trait Hash: Send + Sync + fmt::Debug {
    /// Starts an incremental hash.
    fn start(&self) -> Box<dyn HashContext>;

    /// Hashes `data` in one go.
    fn hash(&self, data: &[u8]) -> [u8; HASH_LEN] {
        let mut ctx = self.start();
        ctx.update(data);
        ctx.finish()
    }
}

/// An incremental SHA-256 computation.
pub trait HashContext: Send + Sync {
    /// Absorbs `data`.
    fn update(&mut self, data: &[u8]);
    /// The hash of everything so far, leaving the context usable.
    fn fork_finish(&self) -> [u8; HASH_LEN];
    /// An independent copy of the running state.
    fn fork(&self) -> Box<dyn HashContext>;
    /// The hash of everything so far.
    fn finish(self: Box<Self>) -> [u8; HASH_LEN];
}

/// HMAC-SHA256.
pub trait Hmac: Send + Sync + fmt::Debug {
    /// HMAC of the concatenation of `data` under `key` (any key length).
    fn mac(&self, key: &[u8], data: &[&[u8]]) -> [u8; HASH_LEN];
}

/// HKDF-SHA256 (RFC 5869).
pub trait Hkdf: Send + Sync + fmt::Debug {
    /// HKDF-Extract: a 32-byte pseudorandom key. An empty salt means 32 zero bytes.
    fn extract(&self, salt: &[u8], ikm: &[u8]) -> Secret;

    /// HKDF-Expand of `prk` with the concatenation of `info` into `out`
    /// (`out.len()` at most 255 × 32, else [`CryptoError::InvalidLength`]).
    fn expand(&self, prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError>;
}

/// Every primitive the protocol uses.
#[derive(Clone, Copy, Debug)]
pub struct CryptoProvider {
    /// Short name: `aws-lc` or `rustcrypto`.
    pub name: &'static str,
    /// The basic key exchanges (`x25519`, `p256`, `mlkem768`).
    pub kems: &'static [&'static dyn KeyExchange],
    /// The basic signature algorithms (`ed25519`, `ecdsa-p256`, `mldsa65`).
    pub signatures: &'static [&'static dyn SignatureAlgorithm],
    /// Record protection algorithms.
    pub aeads: &'static [&'static dyn RecordProtection],
    /// SHA-256.
    pub hash: &'static dyn Hash,
    /// HMAC-SHA256.
    pub hmac: &'static dyn Hmac,
    /// HKDF-SHA256.
    pub hkdf: &'static dyn Hkdf,
    /// The random source.
    pub random: &'static dyn SecureRandom,
}

/// What a provider is missing, from [`CryptoProvider::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderInconsistent {
    /// A basic key exchange is missing or listed twice.
    Kem(KemId),
    /// A basic signature algorithm is missing or listed twice.
    Sig(SigAlg),
    /// A record protection algorithm is missing or listed twice.
    Aead(AeadId),
}

impl CryptoProvider {
    /// Checks that every basic algorithm is present exactly once. A provider may leave an
    /// algorithm out; it is then reported here and refused by name at use.
    pub fn check(&self) -> Result<(), ProviderInconsistent> {
        for &k in &[KemId::X25519, KemId::P256, KemId::MlKem768] {
            if self.kems.iter().filter(|x| x.id() == k).count() != 1 {
                return Err(ProviderInconsistent::Kem(k));
            }
        }
        for &s in &[SigAlg::Ed25519, SigAlg::EcdsaP256, SigAlg::MlDsa65] {
            if self.signatures.iter().filter(|x| x.id() == s).count() != 1 {
                return Err(ProviderInconsistent::Sig(s));
            }
        }
        for &a in AeadId::ALL {
            if self.aeads.iter().filter(|x| x.id() == a).count() != 1 {
                return Err(ProviderInconsistent::Aead(a));
            }
        }
        Ok(())
    }

    /// The key exchange `id`, hybrids included.
    pub fn kem(&self, id: KemId) -> Result<Kem, CryptoError> {
        let basic = |id| {
            self.kems
                .iter()
                .copied()
                .find(|k| k.id() == id)
                .ok_or(CryptoError::Unsupported)
        };
        Ok(match id {
            KemId::X25519MlKem768 => Kem::Hybrid {
                pq: basic(KemId::MlKem768)?,
                classic: basic(KemId::X25519)?,
            },
            other => Kem::Basic(basic(other)?),
        })
    }

    /// The signature algorithm `id`, hybrids included.
    pub fn signature(&self, id: SigAlg) -> Result<Signature, CryptoError> {
        let basic = |id| {
            self.signatures
                .iter()
                .copied()
                .find(|k| k.id() == id)
                .ok_or(CryptoError::Unsupported)
        };
        Ok(match id {
            SigAlg::Ed25519MlDsa65 => Signature::Hybrid {
                classic: basic(SigAlg::Ed25519)?,
                pq: basic(SigAlg::MlDsa65)?,
            },
            other => Signature::Basic(basic(other)?),
        })
    }

    /// The record protection algorithm `id`.
    pub fn aead(&self, id: AeadId) -> Result<&'static dyn RecordProtection, CryptoError> {
        self.aeads
            .iter()
            .copied()
            .find(|a| a.id() == id)
            .ok_or(CryptoError::Unsupported)
    }

    /// `len` random bytes.
    pub fn random_vec(&self, len: usize) -> Result<Vec<u8>, CryptoError> {
        let mut v = alloc::vec![0u8; len];
        self.random.fill(&mut v)?;
        Ok(v)
    }
}

/// A resolved key exchange: a provider's basic one, or a hybrid composed in the core.
#[derive(Clone, Copy, Debug)]
pub enum Kem {
    /// One algorithm.
    Basic(&'static dyn KeyExchange),
    /// ML-KEM-768 + X25519 (X25519MLKEM768 order: ML-KEM part first).
    Hybrid {
        /// The ML-KEM-768 half.
        pq: &'static dyn KeyExchange,
        /// The X25519 half.
        classic: &'static dyn KeyExchange,
    },
}

/// A resolved signature algorithm: a provider's basic one, or the composite.
#[derive(Clone, Copy, Debug)]
pub enum Signature {
    /// One algorithm.
    Basic(&'static dyn SignatureAlgorithm),
    /// Ed25519 + ML-DSA-65: keys, public keys and signatures are `ed25519 || mldsa65`.
    Hybrid {
        /// The Ed25519 half.
        classic: &'static dyn SignatureAlgorithm,
        /// The ML-DSA-65 half.
        pq: &'static dyn SignatureAlgorithm,
    },
}
