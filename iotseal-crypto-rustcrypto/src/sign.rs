//! Identity signatures: Ed25519 (ed25519-dalek), ECDSA P-256 with SHA-256 (p256) and
//! ML-DSA-65 (ml-dsa).
//!
//! Every verification failure, including a malformed public key, is reported as
//! [`CryptoError::BadSignature`], as the core does for the composite signature.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use ed25519_dalek::Signer as _;
use iotseal_proto::crypto::{CryptoError, Secret, SecureRandom, SignatureAlgorithm, SigningKey};
use iotseal_proto::suite::SigAlg;
use ml_dsa::MlDsa65 as MlDsa65Params;
use ml_dsa::signature::Verifier as _;
use p256::ecdsa::signature::RandomizedSigner as _;
use zeroize::{Zeroize, Zeroizing};

use crate::kx::{parse_p256_point, random_p256_scalar};
use crate::rng::{RngAdapter, random_array};

/// Ed25519 (RFC 8032). Private key: the 32-byte seed; verification is ed25519-dalek's
/// `verify_strict` (canonical `s`, no small-order `R` or public key).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ed25519;

/// ECDSA on P-256 with SHA-256. Private key: the 32-byte big-endian scalar; public key: the
/// 65-byte uncompressed point; signature: 64-byte `r || s`. Signing is RFC 6979 hedged with 32
/// bytes from the random source; verification accepts both low and high `s`.
#[derive(Clone, Copy, Debug, Default)]
pub struct EcdsaP256;

/// ML-DSA-65 (FIPS 204). Private key: the 32-byte seed ξ; public key 1952 bytes; signature
/// 3309 bytes. Hedged signing (32 bytes `rnd` from the random source), empty context.
#[derive(Clone, Copy, Debug, Default)]
pub struct MlDsa65;

fn private_32(private: &[u8]) -> Result<&[u8; 32], CryptoError> {
    private.try_into().map_err(|_| CryptoError::InvalidKey)
}

// ---------------------------------------------------------------------------------------------
// Ed25519

struct Ed25519Key(ed25519_dalek::SigningKey);

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("public", &self.0.verifying_key().as_bytes())
            .finish_non_exhaustive()
    }
}

impl SigningKey for Ed25519Key {
    fn algorithm(&self) -> SigAlg {
        SigAlg::Ed25519
    }

    fn public_key(&self) -> Vec<u8> {
        self.0.verifying_key().to_bytes().to_vec()
    }

    fn sign(&self, msg: &[u8], _rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        Ok(self.0.sign(msg).to_bytes().to_vec())
    }

    fn private_bytes(&self) -> Secret {
        Secret::from_slice(self.0.as_bytes())
    }
}

impl SignatureAlgorithm for Ed25519 {
    fn id(&self) -> SigAlg {
        SigAlg::Ed25519
    }

    fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError> {
        let seed = random_array::<32>(rng)?;
        Ok(Box::new(Ed25519Key(ed25519_dalek::SigningKey::from_bytes(
            &seed,
        ))))
    }

    fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(Ed25519Key(ed25519_dalek::SigningKey::from_bytes(
            private_32(private)?,
        ))))
    }

    fn verify(&self, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let public: &[u8; 32] = public.try_into().map_err(|_| CryptoError::BadSignature)?;
        let sig: &[u8; 64] = sig.try_into().map_err(|_| CryptoError::BadSignature)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(public)
            .map_err(|_| CryptoError::BadSignature)?;
        key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(sig))
            .map_err(|_| CryptoError::BadSignature)
    }
}

// ---------------------------------------------------------------------------------------------
// ECDSA P-256

struct EcdsaKey {
    key: p256::ecdsa::SigningKey,
    public: [u8; 65],
}

impl EcdsaKey {
    fn new(key: p256::ecdsa::SigningKey) -> Self {
        let point = key.verifying_key().to_sec1_point(false);
        let mut public = [0u8; 65];
        public.copy_from_slice(point.as_bytes());
        Self { key, public }
    }
}

impl fmt::Debug for EcdsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcdsaKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey for EcdsaKey {
    fn algorithm(&self) -> SigAlg {
        SigAlg::EcdsaP256
    }

    fn public_key(&self) -> Vec<u8> {
        self.public.to_vec()
    }

    fn sign(&self, msg: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        // RFC 6979 k derivation with 32 bytes of added randomness (RFC 6979 §3.6).
        let mut rng = RngAdapter::new(rng);
        let sig: p256::ecdsa::Signature = self
            .key
            .try_sign_with_rng(&mut rng, msg)
            .map_err(|_| CryptoError::RandomFailed)?;
        Ok(sig.to_bytes().to_vec())
    }

    fn private_bytes(&self) -> Secret {
        let mut bytes = self.key.to_bytes();
        let out = Secret::from_slice(&bytes);
        bytes.as_mut_slice().zeroize();
        out
    }
}

impl SignatureAlgorithm for EcdsaP256 {
    fn id(&self) -> SigAlg {
        SigAlg::EcdsaP256
    }

    fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError> {
        let secret = random_p256_scalar(rng)?;
        Ok(Box::new(EcdsaKey::new(p256::ecdsa::SigningKey::from(
            secret,
        ))))
    }

    fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        let key = p256::ecdsa::SigningKey::from_bytes(private_32(private)?.into())
            .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(EcdsaKey::new(key)))
    }

    fn verify(&self, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let point = parse_p256_point(public).map_err(|_| CryptoError::BadSignature)?;
        let key = p256::ecdsa::VerifyingKey::from(point);
        // from_slice refuses a wrong length and r or s that is zero or ≥ n.
        let sig = p256::ecdsa::Signature::from_slice(sig).map_err(|_| CryptoError::BadSignature)?;
        key.verify(msg, &sig).map_err(|_| CryptoError::BadSignature)
    }
}

// ---------------------------------------------------------------------------------------------
// ML-DSA-65

const MLDSA_PK_LEN: usize = 1952;

struct MlDsaKey {
    key: Box<ml_dsa::ExpandedSigningKey<MlDsa65Params>>,
    seed: Zeroizing<[u8; 32]>,
    public: Vec<u8>,
}

impl MlDsaKey {
    fn new(seed: Zeroizing<[u8; 32]>) -> Self {
        let key = Box::new(ml_dsa::ExpandedSigningKey::<MlDsa65Params>::from_seed(
            (&*seed).into(),
        ));
        let public = key.verifying_key().encode().to_vec();
        debug_assert_eq!(public.len(), MLDSA_PK_LEN);
        Self { key, seed, public }
    }
}

impl fmt::Debug for MlDsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MlDsaKey").finish_non_exhaustive()
    }
}

impl SigningKey for MlDsaKey {
    fn algorithm(&self) -> SigAlg {
        SigAlg::MlDsa65
    }

    fn public_key(&self) -> Vec<u8> {
        self.public.clone()
    }

    fn sign(&self, msg: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        // Hedged ML-DSA.Sign: exactly 32 bytes `rnd` from the source, empty context.
        let mut rng = RngAdapter::new(rng);
        let sig = self.key.sign_randomized(msg, &[], &mut rng).map_err(|_| {
            if rng.failed() {
                CryptoError::RandomFailed
            } else {
                CryptoError::InvalidKey
            }
        })?;
        Ok(sig.encode().to_vec())
    }

    fn private_bytes(&self) -> Secret {
        Secret::from_slice(self.seed.as_ref())
    }
}

impl SignatureAlgorithm for MlDsa65 {
    fn id(&self) -> SigAlg {
        SigAlg::MlDsa65
    }

    fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(MlDsaKey::new(random_array::<32>(rng)?)))
    }

    fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(MlDsaKey::new(Zeroizing::new(*private_32(
            private,
        )?))))
    }

    fn verify(&self, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        let public = <&ml_dsa::EncodedVerifyingKey<MlDsa65Params>>::try_from(public)
            .map_err(|_| CryptoError::BadSignature)?;
        // Decoding refuses a wrong length, malformed hints and an out-of-range z.
        let sig = ml_dsa::Signature::<MlDsa65Params>::try_from(sig)
            .map_err(|_| CryptoError::BadSignature)?;
        let key = ml_dsa::VerifyingKey::<MlDsa65Params>::decode(public);
        key.verify(msg, &sig).map_err(|_| CryptoError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{FailingRng, ReplayRng, TestRng, hex};

    const ALL: [&dyn SignatureAlgorithm; 3] = [&Ed25519, &EcdsaP256, &MlDsa65];

    #[test]
    fn sign_verify_round_trip() {
        let rng = TestRng::new(b"sign round trip");
        for alg in ALL {
            let id = alg.id();
            let key = alg.generate(&rng).unwrap();
            assert_eq!(key.algorithm(), id);
            let public = key.public_key();
            assert_eq!(public.len(), id.public_key_len());
            let sig = key.sign(b"hello", &rng).unwrap();
            assert_eq!(sig.len(), id.signature_len());
            alg.verify(&public, b"hello", &sig).unwrap();

            // Reload from the private bytes: same public key, signatures still verify.
            let private = key.private_bytes();
            assert_eq!(private.len(), id.private_key_len());
            let again = alg.load(private.as_bytes()).unwrap();
            assert_eq!(again.public_key(), public);
            alg.verify(&public, b"hello", &again.sign(b"hello", &rng).unwrap())
                .unwrap();
        }
    }

    #[test]
    fn tampering_refused() {
        let rng = TestRng::new(b"sign tamper");
        for alg in ALL {
            let key = alg.generate(&rng).unwrap();
            let public = key.public_key();
            let sig = key.sign(b"message", &rng).unwrap();
            let bad = CryptoError::BadSignature;
            assert_eq!(alg.verify(&public, b"messagf", &sig).unwrap_err(), bad);
            assert_eq!(alg.verify(&public, b"", &sig).unwrap_err(), bad);
            for i in [0, sig.len() / 2, sig.len() - 1] {
                let mut s = sig.clone();
                s[i] ^= 0x01;
                assert_eq!(
                    alg.verify(&public, b"message", &s).unwrap_err(),
                    bad,
                    "{}",
                    alg.id()
                );
            }
            let other = alg.generate(&rng).unwrap().public_key();
            assert_eq!(alg.verify(&other, b"message", &sig).unwrap_err(), bad);
        }
    }

    #[test]
    fn wrong_lengths_refused() {
        let rng = TestRng::new(b"sign lengths");
        for alg in ALL {
            let id = alg.id();
            let key = alg.generate(&rng).unwrap();
            let public = key.public_key();
            let sig = key.sign(b"m", &rng).unwrap();
            let bad = CryptoError::BadSignature;
            assert_eq!(
                alg.verify(&public, b"m", &sig[..sig.len() - 1])
                    .unwrap_err(),
                bad
            );
            let mut long = sig.clone();
            long.push(0);
            assert_eq!(alg.verify(&public, b"m", &long).unwrap_err(), bad);
            assert_eq!(alg.verify(&public, b"m", &[]).unwrap_err(), bad);
            assert_eq!(
                alg.verify(&public[..public.len() - 1], b"m", &sig)
                    .unwrap_err(),
                bad
            );
            assert_eq!(alg.verify(&[], b"m", &sig).unwrap_err(), bad);
            for len in [0, 31, 33, 64] {
                let private = alloc::vec![7u8; len];
                assert_eq!(
                    alg.load(&private).unwrap_err(),
                    CryptoError::InvalidKey,
                    "{id}"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_keys_and_signatures() {
        for alg in ALL {
            let run = |label: &[u8]| {
                let rng = TestRng::new(label);
                let key = alg.generate(&rng).unwrap();
                (key.public_key(), key.sign(b"msg", &rng).unwrap())
            };
            assert_eq!(run(b"det"), run(b"det"), "{}", alg.id());
            assert_ne!(run(b"det"), run(b"other"), "{}", alg.id());
        }
    }

    #[test]
    fn hedged_signatures_differ_with_fresh_randomness() {
        let rng = TestRng::new(b"hedged");
        for (alg, hedged) in [
            (&Ed25519 as &dyn SignatureAlgorithm, false),
            (&EcdsaP256, true),
            (&MlDsa65, true),
        ] {
            let key = alg.generate(&rng).unwrap();
            let a = key.sign(b"msg", &rng).unwrap();
            let b = key.sign(b"msg", &rng).unwrap();
            assert_eq!(a != b, hedged, "{}", alg.id());
        }
    }

    #[test]
    fn random_failure_is_reported() {
        let rng = TestRng::new(b"sign fail");
        for alg in ALL {
            assert_eq!(
                alg.generate(&FailingRng).unwrap_err(),
                CryptoError::RandomFailed
            );
        }
        for alg in [&EcdsaP256 as &dyn SignatureAlgorithm, &MlDsa65] {
            let key = alg.generate(&rng).unwrap();
            assert_eq!(
                key.sign(b"m", &FailingRng).unwrap_err(),
                CryptoError::RandomFailed
            );
        }
        // Ed25519 is deterministic and draws nothing.
        let key = Ed25519.generate(&rng).unwrap();
        assert!(key.sign(b"m", &FailingRng).is_ok());
    }

    #[test]
    fn mldsa_draws_exactly_32_bytes_per_signature() {
        let key = MlDsa65.load(&[3; 32]).unwrap();
        let rng = ReplayRng::new(&[9; 32]);
        let a = key.sign(b"m", &rng).unwrap();
        assert_eq!(rng.remaining(), 0);
        // Same rnd, same signature; rnd = 0 is the deterministic variant.
        assert_eq!(a, key.sign(b"m", &ReplayRng::new(&[9; 32])).unwrap());
        let det = key.sign(b"m", &ReplayRng::new(&[0; 32])).unwrap();
        let sk = ml_dsa::ExpandedSigningKey::<MlDsa65Params>::from_seed(&[3; 32].into());
        assert_eq!(
            det,
            sk.sign_deterministic(b"m", &[])
                .unwrap()
                .encode()
                .as_slice()
        );
    }

    #[test]
    fn ed25519_rfc8032_test_1() {
        let seed = hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
        let key = Ed25519.load(&seed).unwrap();
        let public = hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
        assert_eq!(key.public_key(), public);
        let sig = key.sign(b"", &FailingRng).unwrap();
        assert_eq!(
            sig,
            hex(
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155
                 5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
            )
        );
        Ed25519.verify(&public, b"", &sig).unwrap();
    }

    #[test]
    fn ed25519_strict_refuses_small_order_keys_and_non_canonical_s() {
        // Identity public key with R = identity, s = 0: "valid" for every message under
        // cofactored or lax verification, refused by verify_strict.
        let mut public = [0u8; 32];
        public[0] = 1;
        let mut sig = [0u8; 64];
        sig[0] = 1;
        assert_eq!(
            Ed25519.verify(&public, b"any", &sig).unwrap_err(),
            CryptoError::BadSignature
        );

        // s + L is refused (malleability).
        let key = Ed25519.load(&[1; 32]).unwrap();
        let mut sig = key.sign(b"m", &FailingRng).unwrap();
        let l = hex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(sig[32 + i]) + u16::from(l[i]) + carry;
            sig[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert_eq!(
            Ed25519.verify(&key.public_key(), b"m", &sig).unwrap_err(),
            CryptoError::BadSignature
        );
    }

    /// RFC 6979 A.2.5 key and its deterministic "sample" signature.
    #[test]
    fn ecdsa_rfc6979_key_and_signature() {
        let x = hex("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721");
        let key = EcdsaP256.load(&x).unwrap();
        let public = hex(
            "04 60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6
                7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299",
        );
        assert_eq!(key.public_key(), public);
        assert_eq!(key.private_bytes().as_bytes(), x);
        let sig = hex(
            "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716
             f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8",
        );
        EcdsaP256.verify(&public, b"sample", &sig).unwrap();
        // Hedged signing never repeats the deterministic signature, but it verifies.
        let hedged = key.sign(b"sample", &TestRng::new(b"rfc6979")).unwrap();
        assert_ne!(hedged, sig);
        EcdsaP256.verify(&public, b"sample", &hedged).unwrap();
    }

    const N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

    /// n - s, big-endian.
    fn negate_mod_n(s: &[u8]) -> Vec<u8> {
        let n = hex(N);
        let mut out = alloc::vec![0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut v = i16::from(n[i]) - i16::from(s[i]) - borrow;
            borrow = i16::from(v < 0);
            if v < 0 {
                v += 256;
            }
            out[i] = v as u8;
        }
        out
    }

    #[test]
    fn ecdsa_accepts_high_and_low_s() {
        let rng = TestRng::new(b"ecdsa s");
        let key = EcdsaP256.generate(&rng).unwrap();
        let public = key.public_key();
        for msg in [&b"a"[..], b"b", b"c", b"d"] {
            let sig = key.sign(msg, &rng).unwrap();
            let mut flipped = sig[..32].to_vec();
            flipped.extend_from_slice(&negate_mod_n(&sig[32..]));
            EcdsaP256.verify(&public, msg, &sig).unwrap();
            EcdsaP256.verify(&public, msg, &flipped).unwrap();
        }
    }

    #[test]
    fn ecdsa_out_of_range_scalars_refused() {
        let rng = TestRng::new(b"ecdsa range");
        let key = EcdsaP256.generate(&rng).unwrap();
        let public = key.public_key();
        let sig = key.sign(b"m", &rng).unwrap();
        let (r, s) = sig.split_at(32);
        let zero = [0u8; 32];
        let n = hex(N);
        for (r, s) in [(&zero[..], s), (r, &zero[..]), (&n[..], s), (r, &n[..])] {
            let mut bad = r.to_vec();
            bad.extend_from_slice(s);
            assert_eq!(
                EcdsaP256.verify(&public, b"m", &bad).unwrap_err(),
                CryptoError::BadSignature
            );
        }
        for bad in [zero.to_vec(), n] {
            assert_eq!(EcdsaP256.load(&bad).unwrap_err(), CryptoError::InvalidKey);
        }
        // Compressed or invalid public keys.
        let mut compressed = alloc::vec![0x02 | (public[64] & 1)];
        compressed.extend_from_slice(&public[1..33]);
        assert_eq!(
            EcdsaP256.verify(&compressed, b"m", &sig).unwrap_err(),
            CryptoError::BadSignature
        );
        let mut off_curve = public.clone();
        off_curve[64] ^= 1;
        assert_eq!(
            EcdsaP256.verify(&off_curve, b"m", &sig).unwrap_err(),
            CryptoError::BadSignature
        );
    }
}
