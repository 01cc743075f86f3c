//! Key exchanges: X25519 (x25519-dalek), ECDH on P-256 (p256) and ML-KEM-768 (ml-kem).
//!
//! Every exchange takes all of its randomness from the `rng` argument, in a fixed order, so a
//! seeded source gives reproducible shares:
//!
//! - X25519: 32 bytes, the private scalar (clamped by X25519 itself).
//! - P-256: 32 bytes, the big-endian private scalar; redrawn while it is zero or ≥ n (at most
//!   64 draws, then [`CryptoError::RandomFailed`]: only a broken source gets there).
//! - ML-KEM-768: `start` draws 64 bytes `d || z` (FIPS 203 `ML-KEM.KeyGen_internal`), `respond`
//!   draws 32 bytes `m` (`ML-KEM.Encaps_internal`).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use iotseal_proto::crypto::{
    ActiveKeyExchange, CryptoError, KemResponse, KeyExchange, Secret, SecureRandom,
};
use iotseal_proto::suite::KemId;
#[allow(deprecated)] // the expanded dk is only for the test-only import/export
use ml_kem::ExpandedKeyEncoding;
use ml_kem::array::Array;
use ml_kem::{Decapsulate, KeyExport};
use p256::elliptic_curve::sec1::ToSec1Point;
use zeroize::Zeroize;

use crate::rng::random_array;

/// Attempts at drawing a valid P-256 scalar before giving up: a random 32-byte string is out
/// of range with probability about 2^-32, so only a broken source reaches this.
pub(crate) const SCALAR_ATTEMPTS: usize = 64;

/// X25519 (RFC 7748). Shares are 32-byte public keys; an all-zero result is refused.
#[derive(Clone, Copy, Debug, Default)]
pub struct X25519;

/// ECDH on NIST P-256. Shares are 65-byte uncompressed SEC 1 points; the secret is the 32-byte
/// x-coordinate.
#[derive(Clone, Copy, Debug, Default)]
pub struct P256;

/// ML-KEM-768 (FIPS 203). The device's share is the 1184-byte encapsulation key, the gateway's
/// the 1088-byte ciphertext; the secret is 32 bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MlKem768;

// ---------------------------------------------------------------------------------------------
// X25519

struct X25519Active {
    secret: x25519_dalek::StaticSecret,
    share: [u8; 32],
}

impl X25519Active {
    fn new(scalar: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(scalar);
        let share = x25519_dalek::PublicKey::from(&secret).to_bytes();
        Self { secret, share }
    }

    fn generate(rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        Ok(Self::new(*random_array::<32>(rng)?))
    }

    fn agree(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        let peer: [u8; 32] = peer.try_into().map_err(|_| CryptoError::InvalidKey)?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // Constant-time all-zero check: a low-order peer point.
        if !shared.was_contributory() {
            return Err(CryptoError::ZeroSharedSecret);
        }
        Ok(Secret::from_slice(shared.as_bytes()))
    }
}

impl fmt::Debug for X25519Active {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X25519Active")
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

impl ActiveKeyExchange for X25519Active {
    fn share(&self) -> &[u8] {
        &self.share
    }

    fn complete(self: Box<Self>, peer_share: &[u8]) -> Result<Secret, CryptoError> {
        self.agree(peer_share)
    }

    fn dangerous_private_bytes(&self) -> Result<Secret, CryptoError> {
        Ok(Secret::from_slice(self.secret.as_bytes()))
    }
}

impl KeyExchange for X25519 {
    fn id(&self) -> KemId {
        KemId::X25519
    }

    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        Ok(Box::new(X25519Active::generate(rng)?))
    }

    fn respond(
        &self,
        peer_share: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        if peer_share.len() != 32 {
            return Err(CryptoError::InvalidKey);
        }
        let ours = X25519Active::generate(rng)?;
        let secret = ours.agree(peer_share)?;
        Ok(KemResponse {
            share: ours.share.to_vec(),
            secret,
        })
    }

    fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let mut scalar: [u8; 32] = private.try_into().map_err(|_| CryptoError::InvalidKey)?;
        let active = X25519Active::new(scalar);
        scalar.zeroize();
        Ok(Box::new(active))
    }
}

// ---------------------------------------------------------------------------------------------
// P-256

/// Parses a peer's share: exactly 65 bytes, `0x04 || x || y`, on the curve. The length and tag
/// checks refuse the identity (`0x00`) and compressed points; p256 checks the curve equation
/// and that the coordinates are below p.
pub(crate) fn parse_p256_point(bytes: &[u8]) -> Result<p256::PublicKey, CryptoError> {
    if bytes.len() != 65 || bytes[0] != 0x04 {
        return Err(CryptoError::InvalidKey);
    }
    p256::PublicKey::from_sec1_bytes(bytes).map_err(|_| CryptoError::InvalidKey)
}

/// Draws a P-256 scalar: 32 big-endian bytes, redrawn while zero or ≥ n.
pub(crate) fn random_p256_scalar(rng: &dyn SecureRandom) -> Result<p256::SecretKey, CryptoError> {
    for _ in 0..SCALAR_ATTEMPTS {
        let bytes = random_array::<32>(rng)?;
        if let Ok(sk) = p256::SecretKey::from_bytes((&*bytes).into()) {
            return Ok(sk);
        }
    }
    Err(CryptoError::RandomFailed)
}

struct P256Active {
    secret: p256::SecretKey,
    share: [u8; 65],
}

impl P256Active {
    fn new(secret: p256::SecretKey) -> Self {
        let point = secret.public_key().to_sec1_point(false);
        let mut share = [0u8; 65];
        share.copy_from_slice(point.as_bytes());
        Self { secret, share }
    }

    fn agree(&self, peer: &[u8]) -> Result<Secret, CryptoError> {
        let peer = parse_p256_point(peer)?;
        // P-256 has cofactor 1: a valid non-identity point times a non-zero scalar is never
        // the identity, so the x-coordinate is always defined.
        let shared = self.secret.diffie_hellman(&peer);
        Ok(Secret::from_slice(shared.raw_secret_bytes()))
    }
}

impl fmt::Debug for P256Active {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("P256Active")
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

impl ActiveKeyExchange for P256Active {
    fn share(&self) -> &[u8] {
        &self.share
    }

    fn complete(self: Box<Self>, peer_share: &[u8]) -> Result<Secret, CryptoError> {
        self.agree(peer_share)
    }

    fn dangerous_private_bytes(&self) -> Result<Secret, CryptoError> {
        let mut bytes = self.secret.to_bytes();
        let out = Secret::from_slice(&bytes);
        bytes.as_mut_slice().zeroize();
        Ok(out)
    }
}

impl KeyExchange for P256 {
    fn id(&self) -> KemId {
        KemId::P256
    }

    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        Ok(Box::new(P256Active::new(random_p256_scalar(rng)?)))
    }

    fn respond(
        &self,
        peer_share: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        // Validate before spending randomness or a scalar multiplication.
        parse_p256_point(peer_share)?;
        let ours = P256Active::new(random_p256_scalar(rng)?);
        let secret = ours.agree(peer_share)?;
        Ok(KemResponse {
            share: ours.share.to_vec(),
            secret,
        })
    }

    fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let bytes: &[u8; 32] = private.try_into().map_err(|_| CryptoError::InvalidKey)?;
        let secret =
            p256::SecretKey::from_bytes(bytes.into()).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(P256Active::new(secret)))
    }
}

// ---------------------------------------------------------------------------------------------
// ML-KEM-768

type DecapsulationKey = ml_kem::DecapsulationKey768;
type EncapsulationKey = ml_kem::EncapsulationKey768;

/// FIPS 203 sizes for ML-KEM-768.
const EK_LEN: usize = 1184;
const CT_LEN: usize = 1088;
const DK_LEN: usize = 2400;

struct MlKemActive {
    dk: DecapsulationKey,
    share: Vec<u8>,
}

impl MlKemActive {
    fn new(dk: DecapsulationKey) -> Self {
        let share = dk.encapsulation_key().to_bytes().to_vec();
        Self { dk, share }
    }
}

impl fmt::Debug for MlKemActive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MlKemActive")
            .field("share_len", &self.share.len())
            .finish_non_exhaustive()
    }
}

impl ActiveKeyExchange for MlKemActive {
    fn share(&self) -> &[u8] {
        &self.share
    }

    fn complete(self: Box<Self>, peer_share: &[u8]) -> Result<Secret, CryptoError> {
        // Any 1088-byte string is a ciphertext: a forged one yields the implicit-rejection key.
        let mut key = self
            .dk
            .decapsulate_slice(peer_share)
            .map_err(|_| CryptoError::InvalidKey)?;
        let out = Secret::from_slice(&key);
        key.as_mut_slice().zeroize();
        Ok(out)
    }

    #[allow(deprecated)] // the expanded form is what the trait asks for
    fn dangerous_private_bytes(&self) -> Result<Secret, CryptoError> {
        let mut dk = self.dk.to_expanded_bytes();
        let out = Secret::from_slice(&dk);
        dk.as_mut_slice().zeroize();
        Ok(out)
    }
}

impl KeyExchange for MlKem768 {
    fn id(&self) -> KemId {
        KemId::MlKem768
    }

    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        // d || z, d first, as ML-KEM.KeyGen draws them.
        let seed = random_array::<64>(rng)?;
        let dk = DecapsulationKey::from_seed(ml_kem::Seed::from(*seed));
        Ok(Box::new(MlKemActive::new(dk)))
    }

    fn respond(
        &self,
        peer_share: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        if peer_share.len() != EK_LEN {
            return Err(CryptoError::InvalidKey);
        }
        let ek_bytes =
            <&Array<u8, _>>::try_from(peer_share).map_err(|_| CryptoError::InvalidKey)?;
        // ml-kem performs the FIPS 203 §7.2 modulus check here.
        let ek = EncapsulationKey::new(ek_bytes).map_err(|_| CryptoError::InvalidKey)?;
        let m = random_array::<32>(rng)?;
        let (ct, mut key) = ek.encapsulate_deterministic((&*m).into());
        let secret = Secret::from_slice(&key);
        key.as_mut_slice().zeroize();
        debug_assert_eq!(ct.len(), CT_LEN);
        Ok(KemResponse {
            share: ct.to_vec(),
            secret,
        })
    }

    #[allow(deprecated)] // the expanded form is what the trait asks for
    fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        if private.len() != DK_LEN {
            return Err(CryptoError::InvalidKey);
        }
        let bytes = <&Array<u8, _>>::try_from(private).map_err(|_| CryptoError::InvalidKey)?;
        // Checks the embedded ek (modulus) and H(ek) (FIPS 203 §7.3 hash check).
        let dk =
            DecapsulationKey::from_expanded_bytes(bytes).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(MlKemActive::new(dk)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{FailingRng, ReplayRng, TestRng, hex};
    use ml_kem::Encapsulate as _;

    const ALL: [&dyn KeyExchange; 3] = [&X25519, &P256, &MlKem768];

    fn exchange(kem: &dyn KeyExchange, rng: &dyn SecureRandom) -> (Vec<u8>, Vec<u8>, Secret) {
        let device = kem.start(rng).unwrap();
        let share = device.share().to_vec();
        let gateway = kem.respond(&share, rng).unwrap();
        let secret = device.complete(&gateway.share).unwrap();
        assert_eq!(secret, gateway.secret, "{}", kem.id());
        (share, gateway.share, secret)
    }

    #[test]
    fn both_sides_agree() {
        let rng = TestRng::new(b"kx agree");
        for kem in ALL {
            let (a, b, s) = exchange(kem, &rng);
            assert_eq!(a.len(), kem.id().initiator_share_len());
            assert_eq!(b.len(), kem.id().responder_share_len());
            assert_eq!(s.len(), 32);
            // A second run uses fresh randomness.
            let (a2, b2, s2) = exchange(kem, &rng);
            assert_ne!((a, b, s), (a2, b2, s2));
        }
    }

    #[test]
    fn same_seed_same_output() {
        for kem in ALL {
            let one = exchange(kem, &TestRng::new(b"kx det"));
            let two = exchange(kem, &TestRng::new(b"kx det"));
            assert_eq!(one, two, "{}", kem.id());
        }
    }

    #[test]
    fn wrong_lengths_refused() {
        let rng = TestRng::new(b"kx lengths");
        for kem in ALL {
            let id = kem.id();
            for len in [
                0,
                1,
                id.initiator_share_len() - 1,
                id.initiator_share_len() + 1,
            ] {
                let share = alloc::vec![4u8; len];
                assert_eq!(
                    kem.respond(&share, &rng).unwrap_err(),
                    CryptoError::InvalidKey
                );
            }
            for len in [
                0,
                1,
                id.responder_share_len() - 1,
                id.responder_share_len() + 1,
            ] {
                let device = kem.start(&rng).unwrap();
                let share = alloc::vec![4u8; len];
                assert_eq!(
                    device.complete(&share).unwrap_err(),
                    CryptoError::InvalidKey
                );
            }
            for len in [0, 31, 33, 2399, 2401] {
                let private = alloc::vec![1u8; len];
                assert_eq!(
                    kem.dangerous_import_ephemeral(&private).unwrap_err(),
                    CryptoError::InvalidKey
                );
            }
        }
    }

    #[test]
    fn random_failure_is_reported() {
        for kem in ALL {
            assert_eq!(
                kem.start(&FailingRng).unwrap_err(),
                CryptoError::RandomFailed
            );
            let share = kem.start(&TestRng::new(b"fail")).unwrap().share().to_vec();
            assert_eq!(
                kem.respond(&share, &FailingRng).unwrap_err(),
                CryptoError::RandomFailed
            );
        }
    }

    #[test]
    fn private_bytes_round_trip() {
        let rng = TestRng::new(b"kx export");
        for (kem, len) in [
            (&X25519 as &dyn KeyExchange, 32),
            (&P256, 32),
            (&MlKem768, 2400),
        ] {
            let device = kem.start(&rng).unwrap();
            let private = device.dangerous_private_bytes().unwrap();
            assert_eq!(private.len(), len);
            let again = kem.dangerous_import_ephemeral(private.as_bytes()).unwrap();
            assert_eq!(again.share(), device.share());
            let gateway = kem.respond(device.share(), &rng).unwrap();
            assert_eq!(again.complete(&gateway.share).unwrap(), gateway.secret);
        }
    }

    #[test]
    fn x25519_rfc7748_vector() {
        let alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob_public = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let device = X25519.dangerous_import_ephemeral(&alice).unwrap();
        assert_eq!(
            device.share(),
            hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            device.complete(&bob_public).unwrap().as_bytes(),
            hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        );
    }

    #[test]
    fn x25519_low_order_points_refused() {
        let rng = TestRng::new(b"x25519 zero");
        let mut one = [0u8; 32];
        one[0] = 1;
        // 0 and 1 (orders 4 and 1); p - 1 = 2^255 - 20 (order 2); and the order-8 point
        // from RFC 7748 §7 discussion / Wycheproof.
        let mut p_minus_1 = [0xffu8; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        let order8 = hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800");
        for bad in [[0u8; 32], one, p_minus_1, order8.try_into().unwrap()] {
            assert_eq!(
                X25519.respond(&bad, &rng).unwrap_err(),
                CryptoError::ZeroSharedSecret
            );
            let device = X25519.start(&rng).unwrap();
            assert_eq!(
                device.complete(&bad).unwrap_err(),
                CryptoError::ZeroSharedSecret
            );
        }
    }

    #[test]
    fn p256_invalid_points_refused() {
        let rng = TestRng::new(b"p256 points");
        let good = P256.start(&rng).unwrap().share().to_vec();
        assert!(P256.respond(&good, &rng).is_ok());

        let mut off_curve = good.clone();
        off_curve[64] ^= 1;
        let mut compressed_tag = good.clone();
        compressed_tag[0] = 0x02;
        let mut hybrid_tag = good.clone();
        hybrid_tag[0] = 0x06 | (good[64] & 1);
        let mut x_too_big = alloc::vec![0xffu8; 65];
        x_too_big[0] = 0x04;
        let mut zeros = alloc::vec![0u8; 65];
        let compressed = {
            let mut c = alloc::vec![0x02 | (good[64] & 1)];
            c.extend_from_slice(&good[1..33]);
            c
        };
        let identity = alloc::vec![0u8];
        for bad in [
            off_curve,
            compressed_tag,
            hybrid_tag,
            x_too_big.clone(),
            compressed,
            identity,
        ] {
            assert_eq!(
                P256.respond(&bad, &rng).unwrap_err(),
                CryptoError::InvalidKey
            );
            let device = P256.start(&rng).unwrap();
            assert_eq!(device.complete(&bad).unwrap_err(), CryptoError::InvalidKey);
        }
        // (0, 0) with the uncompressed tag is not on the curve either.
        zeros[0] = 0x04;
        assert_eq!(
            P256.respond(&zeros, &rng).unwrap_err(),
            CryptoError::InvalidKey
        );
    }

    #[test]
    fn p256_scalar_out_of_range_refused() {
        let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
        for bad in [alloc::vec![0u8; 32], n, alloc::vec![0xffu8; 32]] {
            assert_eq!(
                P256.dangerous_import_ephemeral(&bad).unwrap_err(),
                CryptoError::InvalidKey
            );
        }
        // Keygen redraws a scalar ≥ n: the first draw (all 0xff) is skipped.
        let mut bytes = alloc::vec![0xffu8; 32];
        bytes.extend_from_slice(&[0x11; 32]);
        let rng = ReplayRng::new(&bytes);
        let device = P256.start(&rng).unwrap();
        assert_eq!(
            device.dangerous_private_bytes().unwrap().as_bytes(),
            &[0x11; 32]
        );
        assert_eq!(rng.remaining(), 0);
    }

    #[test]
    fn mlkem_takes_d_then_z_then_m_from_rng() {
        let mut seed = [0u8; 64];
        seed.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let rng = ReplayRng::new(&seed);
        let device = MlKem768.start(&rng).unwrap();
        assert_eq!(rng.remaining(), 0);
        let reference = DecapsulationKey::from_seed(seed.into());
        let ek = reference.encapsulation_key();
        assert_eq!(device.share(), ek.to_bytes().as_slice());

        let m = [0x5au8; 32];
        let rng = ReplayRng::new(&m);
        let gateway = MlKem768.respond(device.share(), &rng).unwrap();
        assert_eq!(rng.remaining(), 0);
        let (ct, key) = ek.encapsulate_deterministic((&m).into());
        assert_eq!(gateway.share, ct.as_slice());
        assert_eq!(gateway.secret.as_bytes(), key.as_slice());
        // And with the crate's own randomised encapsulation the sides still agree.
        let m_rng = TestRng::new(b"m");
        let mut m_rng = rand_core::UnwrapErr(crate::rng::RngAdapter::new(&m_rng));
        let (ct, key) = ek.encapsulate_with_rng(&mut m_rng);
        assert_eq!(device.complete(&ct).unwrap().as_bytes(), key.as_slice());
    }

    #[test]
    fn mlkem_modulus_check() {
        let rng = TestRng::new(b"mlkem modulus");
        let good = MlKem768.start(&rng).unwrap().share().to_vec();
        // First 12-bit coefficient = 0xfff ≥ q = 3329.
        let mut bad = good.clone();
        bad[0] = 0xff;
        bad[1] |= 0x0f;
        assert_eq!(
            MlKem768.respond(&bad, &rng).unwrap_err(),
            CryptoError::InvalidKey
        );
        // Exactly q (0xd01) in the last coefficient of the last polynomial.
        let mut bad = good.clone();
        let i = 1152 - 3; // last 3-byte pair holds coefficients 254 and 255
        bad[i + 1] = (bad[i + 1] & 0x0f) | 0x10;
        bad[i + 2] = 0xd0;
        assert_eq!(
            MlKem768.respond(&bad, &rng).unwrap_err(),
            CryptoError::InvalidKey
        );
        // q - 1 is fine.
        let mut ok = good;
        ok[i + 1] &= 0x0f;
        ok[i + 2] = 0xd0;
        assert!(MlKem768.respond(&ok, &rng).is_ok());
    }

    #[test]
    fn mlkem_expanded_key_hash_check() {
        let rng = TestRng::new(b"mlkem dk");
        let dk = MlKem768
            .start(&rng)
            .unwrap()
            .dangerous_private_bytes()
            .unwrap();
        let mut bad = dk.as_bytes().to_vec();
        bad[2400 - 64] ^= 1; // H(ek)
        assert_eq!(
            MlKem768.dangerous_import_ephemeral(&bad).unwrap_err(),
            CryptoError::InvalidKey
        );
    }

    #[test]
    fn mlkem_forged_ciphertext_gives_a_different_secret() {
        let rng = TestRng::new(b"mlkem reject");
        let device = MlKem768.start(&rng).unwrap();
        let mut gateway = MlKem768.respond(device.share(), &rng).unwrap();
        gateway.share[0] ^= 1;
        assert_ne!(device.complete(&gateway.share).unwrap(), gateway.secret);
    }
}
