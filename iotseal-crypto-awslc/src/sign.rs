//! Identity signatures: Ed25519 (strict), ECDSA P-256 with SHA-256, ML-DSA-65.
//!
//! Every `verify` reports every failure (wrong lengths, bad encodings, a signature that does
//! not verify) as [`CryptoError::BadSignature`], with no detail.

use aws_lc_rs::agreement;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, PqdsaKeyPair, UnparsedPublicKey,
};
use iotseal_proto::crypto::{CryptoError, Secret, SecureRandom, SignatureAlgorithm, SigningKey};
use iotseal_proto::suite::SigAlg;
use zeroize::Zeroizing;

/// Length of every private key handled here (Ed25519 seed, P-256 scalar, ML-DSA seed ξ).
const PRIVATE_LEN: usize = 32;
/// How many P-256 scalars to draw before giving up on a random source.
const MAX_SCALAR_TRIES: usize = 64;

/// Checks lengths shared by all three verifiers.
fn check_lengths(alg: SigAlg, public: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
    if public.len() != alg.public_key_len() || sig.len() != alg.signature_len() {
        return Err(CryptoError::BadSignature);
    }
    Ok(())
}

fn load_seed(private: &[u8]) -> Result<Zeroizing<[u8; PRIVATE_LEN]>, CryptoError> {
    let bytes: [u8; PRIVATE_LEN] = private.try_into().map_err(|_| CryptoError::InvalidKey)?;
    Ok(Zeroizing::new(bytes))
}

fn seed_from_rng(rng: &dyn SecureRandom) -> Result<Zeroizing<[u8; PRIVATE_LEN]>, CryptoError> {
    let mut seed = Zeroizing::new([0u8; PRIVATE_LEN]);
    rng.fill(&mut seed[..])?;
    Ok(seed)
}

// ---------------------------------------------------------------------------------------------
// Ed25519

/// Ed25519 (RFC 8032). Private key: the 32-byte seed; public key 32 bytes; signature 64 bytes.
///
/// Verification accepts exactly what ed25519-dalek's `verify_strict` accepts. aws-lc itself
/// checks `S < L` and compares the recomputed `R` byte for byte (so a non-canonical `R`
/// never verifies), but it is cofactorless without any small-order check, and whether it
/// accepts a non-canonical `A` depends on the CPU (the s2n-bignum decoder refuses `y >= p`,
/// the portable one reduces it). This type adds, before calling aws-lc:
/// - `A` must not be a small-order point (in any encoding),
/// - `A` must be canonically encoded (`y < p`): dalek would decode such a key, but no one
///   can sign for it (its discrete log is unknown and, small-order points being refused, it
///   would have to have large order), so refusing it changes no outcome and makes the
///   result independent of the aws-lc code path,
/// - `R` must not be a small-order point (in any encoding).
///
/// Randomness: `generate` draws the seed from `rng`; signing is deterministic.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ed25519;

/// The `y` coordinates (little-endian, sign bit cleared) of the eight small-order points of
/// edwards25519, canonical and non-canonical: 0 (order 4), 1 (order 1), the two order-8
/// values, p-1 (order 2), and the non-canonical p (= 0) and p+1 (= 1). With the sign bit
/// either way these are all encodings of small-order points (the list libsodium uses).
const SMALL_ORDER_Y: [[u8; 32]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    p_plus(-1),
    p_plus(0),
    p_plus(1),
];

/// `p + d` for `d` in -1..=1 as 32 little-endian bytes (p = 2^255 - 19).
const fn p_plus(d: i8) -> [u8; 32] {
    let mut b = [0xff; 32];
    b[31] = 0x7f;
    b[0] = (0xed_i16 + d as i16) as u8;
    b
}

/// Whether a 32-byte point encoding is one of a small-order point, whatever its sign bit.
/// Public data only: no need for constant time.
pub(crate) fn is_small_order(encoding: &[u8; 32]) -> bool {
    let mut y = *encoding;
    y[31] &= 0x7f;
    SMALL_ORDER_Y.contains(&y)
}

/// Whether the `y` of a 32-byte point encoding is reduced (`y < p = 2^255 - 19`).
pub(crate) fn is_canonical_y(encoding: &[u8; 32]) -> bool {
    // y >= p iff bytes 1..=30 are all 0xff, byte 31 (sign bit cleared) is 0x7f and byte 0 is
    // at least 0xed.
    let top = encoding[31] & 0x7f == 0x7f && encoding[1..31].iter().all(|&b| b == 0xff);
    !(top && encoding[0] >= 0xed)
}

impl SignatureAlgorithm for Ed25519 {
    fn id(&self) -> SigAlg {
        SigAlg::Ed25519
    }

    fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(Ed25519Key::new(seed_from_rng(rng)?)?))
    }

    fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(Ed25519Key::new(load_seed(private)?)?))
    }

    fn verify(&self, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        check_lengths(SigAlg::Ed25519, public, sig)?;
        let a: &[u8; 32] = public.try_into().map_err(|_| CryptoError::BadSignature)?;
        let r: &[u8; 32] = sig[..32]
            .try_into()
            .map_err(|_| CryptoError::BadSignature)?;
        if !is_canonical_y(a) || is_small_order(a) || is_small_order(r) {
            return Err(CryptoError::BadSignature);
        }
        UnparsedPublicKey::new(&signature::ED25519, public)
            .verify(msg, sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

struct Ed25519Key {
    pair: Ed25519KeyPair,
    seed: Zeroizing<[u8; PRIVATE_LEN]>,
}

impl Ed25519Key {
    fn new(seed: Zeroizing<[u8; PRIVATE_LEN]>) -> Result<Self, CryptoError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed[..]).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self { pair, seed })
    }
}

impl core::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ed25519Key").finish_non_exhaustive()
    }
}

impl SigningKey for Ed25519Key {
    fn algorithm(&self) -> SigAlg {
        SigAlg::Ed25519
    }

    fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    fn sign(&self, msg: &[u8], _rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        let sig = self
            .pair
            .try_sign(msg)
            .map_err(|_| CryptoError::InvalidKey)?;
        Ok(sig.as_ref().to_vec())
    }

    fn private_bytes(&self) -> Secret {
        Secret::from_slice(&self.seed[..])
    }
}

// ---------------------------------------------------------------------------------------------
// ECDSA P-256

/// ECDSA on P-256 with SHA-256. Private key: the 32-byte big-endian scalar; public key the
/// 65-byte uncompressed point; signature the 64-byte `r || s`.
///
/// Validation: verification takes only the 65-byte `04 || x || y` form (aws-lc would also
/// take compressed points and SubjectPublicKeyInfo); aws-lc checks the point is on the curve
/// and `0 < r, s < n`. High `s` is accepted, as in plain ECDSA.
///
/// Randomness: `generate` draws the scalar from `rng` (redrawn until `1 <= d < n`), so it is
/// deterministic for a seeded source. **Signing ignores `rng`**: aws-lc-rs takes no
/// randomness for ECDSA and draws the nonce from aws-lc's own RNG.
#[derive(Debug, Clone, Copy, Default)]
pub struct EcdsaP256;

impl SignatureAlgorithm for EcdsaP256 {
    fn id(&self) -> SigAlg {
        SigAlg::EcdsaP256
    }

    fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError> {
        for _ in 0..MAX_SCALAR_TRIES {
            match EcdsaKey::new(seed_from_rng(rng)?) {
                Ok(key) => return Ok(Box::new(key)),
                Err(CryptoError::InvalidKey) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(CryptoError::RandomFailed)
    }

    fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(EcdsaKey::new(load_seed(private)?)?))
    }

    fn verify(&self, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        check_lengths(SigAlg::EcdsaP256, public, sig)?;
        if public[0] != 0x04 {
            return Err(CryptoError::BadSignature);
        }
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public)
            .verify(msg, sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

struct EcdsaKey {
    pair: EcdsaKeyPair,
    scalar: Zeroizing<[u8; PRIVATE_LEN]>,
}

impl EcdsaKey {
    /// Imports a big-endian scalar: aws-lc-rs has no ECDSA constructor from the scalar alone,
    /// so the public point is computed with the ECDH key type first (which refuses 0 and
    /// `d >= n`), then both are given to `from_private_key_and_public_key`, which checks that
    /// they match.
    fn new(scalar: Zeroizing<[u8; PRIVATE_LEN]>) -> Result<Self, CryptoError> {
        let ecdh = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &scalar[..])
            .map_err(|_| CryptoError::InvalidKey)?;
        let public = ecdh
            .compute_public_key()
            .map_err(|_| CryptoError::InvalidKey)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &scalar[..],
            public.as_ref(),
        )
        .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self { pair, scalar })
    }
}

impl core::fmt::Debug for EcdsaKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EcdsaKey").finish_non_exhaustive()
    }
}

impl SigningKey for EcdsaKey {
    fn algorithm(&self) -> SigAlg {
        SigAlg::EcdsaP256
    }

    fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    fn sign(&self, msg: &[u8], _rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        // aws-lc-rs ignores this argument too; the nonce comes from aws-lc's RNG.
        let sig = self
            .pair
            .sign(&SystemRandom::new(), msg)
            .map_err(|_| CryptoError::RandomFailed)?;
        Ok(sig.as_ref().to_vec())
    }

    fn private_bytes(&self) -> Secret {
        Secret::from_slice(&self.scalar[..])
    }
}

// ---------------------------------------------------------------------------------------------
// ML-DSA-65

/// ML-DSA-65 (FIPS 204) with the empty context. Private key: the 32-byte seed ξ; public key
/// 1952 bytes; signature 3309 bytes.
///
/// Validation: exact lengths are required (aws-lc would also take a SubjectPublicKeyInfo);
/// aws-lc does the rest of FIPS 204 verification.
///
/// Randomness: `generate` draws ξ from `rng` (deterministic for a seeded source). **Signing
/// ignores `rng`**: aws-lc signs hedged, drawing `rnd` from its own RNG, and aws-lc-rs takes
/// no randomness for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MlDsa65;

impl SignatureAlgorithm for MlDsa65 {
    fn id(&self) -> SigAlg {
        SigAlg::MlDsa65
    }

    fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(MlDsaKey::new(seed_from_rng(rng)?)?))
    }

    fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(MlDsaKey::new(load_seed(private)?)?))
    }

    fn verify(&self, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        check_lengths(SigAlg::MlDsa65, public, sig)?;
        UnparsedPublicKey::new(&signature::ML_DSA_65, public)
            .verify(msg, sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

struct MlDsaKey {
    pair: PqdsaKeyPair,
    seed: Zeroizing<[u8; PRIVATE_LEN]>,
}

impl MlDsaKey {
    fn new(seed: Zeroizing<[u8; PRIVATE_LEN]>) -> Result<Self, CryptoError> {
        let pair = PqdsaKeyPair::from_seed(&signature::ML_DSA_65_SIGNING, &seed[..])
            .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self { pair, seed })
    }
}

impl core::fmt::Debug for MlDsaKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MlDsaKey").finish_non_exhaustive()
    }
}

impl SigningKey for MlDsaKey {
    fn algorithm(&self) -> SigAlg {
        SigAlg::MlDsa65
    }

    fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    fn sign(&self, msg: &[u8], _rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        let mut sig = vec![0u8; SigAlg::MlDsa65.signature_len()];
        let len = self
            .pair
            .sign(msg, &mut sig)
            .map_err(|_| CryptoError::RandomFailed)?;
        sig.truncate(len);
        Ok(sig)
    }

    fn private_bytes(&self) -> Secret {
        Secret::from_slice(&self.seed[..])
    }
}
