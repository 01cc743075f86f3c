//! Key exchanges: X25519, ECDH on P-256 and ML-KEM-768, each seen as a KEM.

use aws_lc_rs::agreement::{self, ParsedPublicKey, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin, EcPrivateKeyBin};
use aws_lc_rs::kem::{self, Ciphertext, ML_KEM_768};
use iotseal_proto::crypto::{
    ActiveKeyExchange, CryptoError, KemResponse, KeyExchange, Secret, SecureRandom,
};
use iotseal_proto::suite::KemId;
use zeroize::Zeroizing;

/// Length of an X25519 or P-256 private scalar.
const SCALAR_LEN: usize = 32;
/// Length of an X25519 public key.
const X25519_SHARE_LEN: usize = 32;
/// Length of an uncompressed SEC 1 P-256 point: `04 || x || y`.
const P256_POINT_LEN: usize = 65;
/// Length of the FIPS 203 ML-KEM-768 (expanded) decapsulation key.
const MLKEM768_DK_LEN: usize = 2400;
/// Length of the ML-KEM-768 encapsulation key.
const MLKEM768_EK_LEN: usize = 1184;
/// Length of an ML-KEM-768 ciphertext.
const MLKEM768_CT_LEN: usize = 1088;
/// Offset of the encapsulation key inside the decapsulation key
/// (`dk = dk_PKE (1152) || ek (1184) || H(ek) (32) || z (32)`, FIPS 203 Algorithm 16).
const MLKEM768_DK_EK_OFFSET: usize = 1152;
/// Offset of `H(ek)` inside the decapsulation key.
const MLKEM768_DK_HASH_OFFSET: usize = MLKEM768_DK_EK_OFFSET + MLKEM768_EK_LEN;
/// How many scalars to draw before giving up on a random source (P-256 rejects at most
/// a 2^-32 fraction of 32-byte strings, so hitting this means the source is broken).
const MAX_SCALAR_TRIES: usize = 64;

/// The two elliptic-curve key exchanges, which share one implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    X25519,
    P256,
}

impl Curve {
    fn algorithm(self) -> &'static agreement::Algorithm {
        match self {
            Self::X25519 => &agreement::X25519,
            Self::P256 => &agreement::ECDH_P256,
        }
    }

    /// The error when the DH itself fails on an already validated peer key. For X25519 that
    /// is aws-lc refusing the all-zero output (`X25519()` fails exactly then); for P-256 it
    /// cannot happen with a validated point.
    fn dh_error(self) -> CryptoError {
        match self {
            Self::X25519 => CryptoError::ZeroSharedSecret,
            Self::P256 => CryptoError::InvalidKey,
        }
    }

    /// Checks the length and encoding of a peer's share and parses it.
    fn parse_peer(self, share: &[u8]) -> Result<ParsedPublicKey, CryptoError> {
        let ok = match self {
            // Exactly 32 bytes: aws-lc would also take a 44-byte SubjectPublicKeyInfo.
            // Every 32-byte string is a valid u-coordinate (RFC 7748 masks the top bit).
            Self::X25519 => share.len() == X25519_SHARE_LEN,
            // aws-lc also parses compressed (02/03), hybrid (06/07) and SubjectPublicKeyInfo
            // encodings: only the 65-byte uncompressed form is allowed on the wire. The
            // identity has no 65-byte encoding; aws-lc checks that the coordinates are
            // reduced and the point is on the curve (EC_POINT_oct2point, EC_KEY_check_key).
            Self::P256 => share.len() == P256_POINT_LEN && share[0] == 0x04,
        };
        if !ok {
            return Err(CryptoError::InvalidKey);
        }
        ParsedPublicKey::try_from(UnparsedPublicKey::new(self.algorithm(), share))
            .map_err(|_| CryptoError::InvalidKey)
    }

    /// Draws a private scalar from `rng` until aws-lc accepts it (P-256: `1 <= d < n`;
    /// X25519: any 32 bytes, clamped by aws-lc when used).
    fn scalar_from_rng(self, rng: &dyn SecureRandom) -> Result<PrivateKey, CryptoError> {
        let mut scalar = Zeroizing::new([0u8; SCALAR_LEN]);
        for _ in 0..MAX_SCALAR_TRIES {
            rng.fill(&mut scalar[..])?;
            if let Ok(key) = PrivateKey::from_private_key(self.algorithm(), &scalar[..]) {
                return Ok(key);
            }
        }
        Err(CryptoError::RandomFailed)
    }

    /// Imports a 32-byte scalar (P-256: big-endian; refuses 0 and `d >= n`).
    fn import(self, private: &[u8]) -> Result<PrivateKey, CryptoError> {
        if private.len() != SCALAR_LEN {
            return Err(CryptoError::InvalidKey);
        }
        PrivateKey::from_private_key(self.algorithm(), private).map_err(|_| CryptoError::InvalidKey)
    }

    /// The DH of `private` with a parsed and validated peer key.
    fn dh(self, private: &PrivateKey, peer: ParsedPublicKey) -> Result<Secret, CryptoError> {
        let secret = agreement::agree(private, peer, self.dh_error(), |s| {
            Ok(Secret::from_slice(s))
        })?;
        // Defence in depth: aws-lc already refuses an all-zero X25519 output. (Not for
        // P-256: x = 0 is the x-coordinate of a valid point, and a valid shared secret.)
        if self == Self::X25519 && secret.as_bytes().iter().all(|&b| b == 0) {
            return Err(CryptoError::ZeroSharedSecret);
        }
        Ok(secret)
    }

    fn start(self, private: PrivateKey) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let share = public_share(&private)?;
        Ok(Box::new(EcdhActive {
            curve: self,
            private,
            share,
        }))
    }

    fn respond(
        self,
        peer_share: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        let peer = self.parse_peer(peer_share)?;
        let ours = self.scalar_from_rng(rng)?;
        let share = public_share(&ours)?;
        let secret = self.dh(&ours, peer)?;
        Ok(KemResponse { share, secret })
    }
}

fn public_share(private: &PrivateKey) -> Result<Vec<u8>, CryptoError> {
    let public = private
        .compute_public_key()
        .map_err(|_| CryptoError::InvalidKey)?;
    Ok(public.as_ref().to_vec())
}

/// An ephemeral X25519 or P-256 key pair. aws-lc wipes the private key when it is freed.
struct EcdhActive {
    curve: Curve,
    private: PrivateKey,
    share: Vec<u8>,
}

impl core::fmt::Debug for EcdhActive {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EcdhActive")
            .field("curve", &self.curve)
            .finish_non_exhaustive()
    }
}

impl ActiveKeyExchange for EcdhActive {
    fn share(&self) -> &[u8] {
        &self.share
    }

    fn complete(self: Box<Self>, peer_share: &[u8]) -> Result<Secret, CryptoError> {
        let peer = self.curve.parse_peer(peer_share)?;
        self.curve.dh(&self.private, peer)
    }

    fn dangerous_private_bytes(&self) -> Result<Secret, CryptoError> {
        let bytes = match self.curve {
            Curve::X25519 => {
                let seed: Curve25519SeedBin<'static> = self
                    .private
                    .as_be_bytes()
                    .map_err(|_| CryptoError::InvalidKey)?;
                Secret::from_slice(seed.as_ref())
            }
            Curve::P256 => {
                let scalar: EcPrivateKeyBin<'static> = self
                    .private
                    .as_be_bytes()
                    .map_err(|_| CryptoError::InvalidKey)?;
                Secret::from_slice(scalar.as_ref())
            }
        };
        Ok(bytes)
    }
}

/// X25519 (RFC 7748). Shares are 32-byte u-coordinates, the secret is 32 bytes; an all-zero
/// secret (low-order peer point) is refused with [`CryptoError::ZeroSharedSecret`].
///
/// Randomness: the private scalar is drawn from the `rng` argument, so a seeded source gives
/// deterministic shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct X25519;

impl KeyExchange for X25519 {
    fn id(&self) -> KemId {
        KemId::X25519
    }

    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        Curve::X25519.start(Curve::X25519.scalar_from_rng(rng)?)
    }

    fn respond(
        &self,
        peer_share: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        Curve::X25519.respond(peer_share, rng)
    }

    fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        Curve::X25519.start(Curve::X25519.import(private)?)
    }
}

/// ECDH on NIST P-256. Shares are 65-byte uncompressed SEC 1 points (`04 || x || y`); the
/// secret is the 32-byte x-coordinate. Compressed, hybrid, off-curve and unreduced encodings
/// are refused with [`CryptoError::InvalidKey`] (the identity has no 65-byte encoding).
///
/// Randomness: the private scalar is drawn from the `rng` argument (redrawn until it is in
/// `[1, n-1]`), so a seeded source gives deterministic shares.
#[derive(Debug, Clone, Copy, Default)]
pub struct P256;

impl KeyExchange for P256 {
    fn id(&self) -> KemId {
        KemId::P256
    }

    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        Curve::P256.start(Curve::P256.scalar_from_rng(rng)?)
    }

    fn respond(
        &self,
        peer_share: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        Curve::P256.respond(peer_share, rng)
    }

    fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        Curve::P256.start(Curve::P256.import(private)?)
    }
}

// ---------------------------------------------------------------------------------------------
// ML-KEM-768

/// ML-KEM-768 (FIPS 203). The device's share is the 1184-byte encapsulation key, the
/// gateway's the 1088-byte ciphertext, the secret 32 bytes.
///
/// Validation: `respond` refuses an encapsulation key failing the FIPS 203 §7.2 modulus
/// check — aws-lc (mlkem-native) runs that check inside every encapsulation and fails it,
/// which is mapped to [`CryptoError::InvalidKey`]. Decapsulation runs the §7.3 hash check.
///
/// Randomness: aws-lc-rs offers no way to pass the key-generation seed or the encapsulation
/// randomness in, so **key generation and encapsulation use aws-lc's own RNG and ignore the
/// `rng` argument**; output is not reproducible from a seeded source. Tests that need fixed
/// values use [`KeyExchange::dangerous_import_ephemeral`] with a decapsulation key.
#[derive(Debug, Clone, Copy, Default)]
pub struct MlKem768;

impl KeyExchange for MlKem768 {
    fn id(&self) -> KemId {
        KemId::MlKem768
    }

    fn start(&self, _rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let dk =
            kem::DecapsulationKey::generate(&ML_KEM_768).map_err(|_| CryptoError::RandomFailed)?;
        let ek = dk
            .encapsulation_key()
            .and_then(|ek| ek.key_bytes())
            .map_err(|_| CryptoError::RandomFailed)?;
        Ok(Box::new(MlKemActive {
            dk,
            share: ek.as_ref().to_vec(),
        }))
    }

    fn respond(
        &self,
        peer_share: &[u8],
        _rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        if peer_share.len() != MLKEM768_EK_LEN {
            return Err(CryptoError::InvalidKey);
        }
        let ek = kem::EncapsulationKey::new(&ML_KEM_768, peer_share)
            .map_err(|_| CryptoError::InvalidKey)?;
        // Fails (among others) when the key does not pass the FIPS 203 §7.2 modulus check.
        let (ct, ss) = ek.encapsulate().map_err(|_| CryptoError::InvalidKey)?;
        Ok(KemResponse {
            share: ct.as_ref().to_vec(),
            secret: Secret::from_slice(ss.as_ref()),
        })
    }

    fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        if private.len() != MLKEM768_DK_LEN {
            return Err(CryptoError::InvalidKey);
        }
        let ek = &private[MLKEM768_DK_EK_OFFSET..MLKEM768_DK_HASH_OFFSET];
        let h = &private[MLKEM768_DK_HASH_OFFSET..MLKEM768_DK_HASH_OFFSET + 32];
        // FIPS 203 §7.3 hash check, done here so a bad key is refused at import rather than at
        // the first decapsulation (where aws-lc runs it again).
        if digest::digest(&digest::SHA3_256, ek).as_ref() != h {
            return Err(CryptoError::InvalidKey);
        }
        let dk = kem::DecapsulationKey::new(&ML_KEM_768, private)
            .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(MlKemActive {
            dk,
            share: ek.to_vec(),
        }))
    }
}

struct MlKemActive {
    dk: kem::DecapsulationKey,
    share: Vec<u8>,
}

impl core::fmt::Debug for MlKemActive {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MlKemActive").finish_non_exhaustive()
    }
}

impl ActiveKeyExchange for MlKemActive {
    fn share(&self) -> &[u8] {
        &self.share
    }

    fn complete(self: Box<Self>, peer_share: &[u8]) -> Result<Secret, CryptoError> {
        if peer_share.len() != MLKEM768_CT_LEN {
            return Err(CryptoError::InvalidKey);
        }
        // A well-formed but wrong ciphertext is not an error: ML-KEM's implicit rejection
        // returns a pseudorandom secret, and the handshake fails later on the MACs.
        let ss = self
            .dk
            .decapsulate(Ciphertext::from(peer_share))
            .map_err(|_| CryptoError::InvalidKey)?;
        Ok(Secret::from_slice(ss.as_ref()))
    }

    fn dangerous_private_bytes(&self) -> Result<Secret, CryptoError> {
        let dk = self.dk.key_bytes().map_err(|_| CryptoError::InvalidKey)?;
        Ok(Secret::from_slice(dk.as_ref()))
    }
}
