//! A `CryptoProvider` that does NO cryptography, for fuzzing only (STYLE.md §6, in the spirit
//! of rustls' fuzzing provider). Every output is a constant or a pattern, and every check
//! accepts exactly what this provider produces, so a fuzzer can forge any message and reach
//! the states behind the MACs, signatures and AEAD tags:
//!
//! - hash: a constant; HMAC: a constant (so the hello MAC, cookie tags and Finished MACs are
//!   `HMAC_OUT[..n]`); HKDF: constant output;
//! - key exchange: the device share is `kem code` repeated, the gateway share `0x80 | code`
//!   repeated; any share of the right length is accepted unless its first byte is `0xff`
//!   (a stand-in for an invalid point, so the error paths stay reachable);
//! - signatures: a fixed pattern per algorithm, checked exactly; public keys are the 32-byte
//!   private key repeated to the algorithm's length;
//! - record protection: the identity "cipher" with the constant tag [`AEAD_TAG`].
//!
//! [`HANDSHAKE_ONLY`] keeps real hashing, HMAC, HKDF and record protection (RustCrypto) and
//! fakes only the public-key work: cheap handshakes, genuine records.

use iotseal_proto::crypto::{
    ActiveKeyExchange, CryptoError, CryptoProvider, HASH_LEN, Hash, HashContext, Hkdf, Hmac,
    KemResponse, KeyExchange, NONCE_LEN, RecordKey, RecordProtection, Secret, SecureRandom,
    SignatureAlgorithm, SigningKey, TAG_LEN,
};
use iotseal_proto::{AeadId, KemId, SigAlg};

use crate::rng::RNG;

/// The fuzzing provider: no security at all.
pub const FAKE: CryptoProvider = CryptoProvider {
    name: "fuzzing",
    kems: &[
        &FakeKem(KemId::X25519),
        &FakeKem(KemId::P256),
        &FakeKem(KemId::MlKem768),
    ],
    signatures: &[
        &FakeSig(SigAlg::Ed25519),
        &FakeSig(SigAlg::EcdsaP256),
        &FakeSig(SigAlg::MlDsa65),
    ],
    aeads: &[
        &FakeAead(AeadId::Aes128Gcm),
        &FakeAead(AeadId::Aes256Gcm),
        &FakeAead(AeadId::ChaCha20Poly1305),
        &FakeAead(AeadId::Aes256CtrHmacSha256),
    ],
    hash: &FakeHash,
    hmac: &FakeHmac,
    hkdf: &FakeHkdf,
    random: &RNG,
};

/// RustCrypto with the resettable random source.
pub const RUSTCRYPTO: CryptoProvider = iotseal_crypto_rustcrypto::provider(&RNG);

/// Fake key exchange and signatures, real everything else (RustCrypto).
pub const HANDSHAKE_ONLY: CryptoProvider = CryptoProvider {
    name: "fuzzing-handshake",
    kems: FAKE.kems,
    signatures: FAKE.signatures,
    ..RUSTCRYPTO
};

/// aws-lc with the resettable random source for the core's own draws (session ids, cookie
/// key); aws-lc's key generation keeps its own randomness.
pub fn awslc() -> CryptoProvider {
    CryptoProvider {
        random: &RNG,
        ..iotseal_crypto_awslc::default_provider()
    }
}

/// Every hash.
pub const HASH_OUT: [u8; HASH_LEN] = *b"fuzz-hash-fuzz-hash-fuzz-hash-!!";
/// Every HMAC.
pub const HMAC_OUT: [u8; HASH_LEN] = *b"fuzz-hmac-fuzz-hmac-fuzz-hmac-!!";
/// Every AEAD tag.
pub const AEAD_TAG: [u8; TAG_LEN] = *b"fuzz-aead-tag-!!";
const KDF_BYTE: u8 = 0x4b;
const SECRET_BYTE: u8 = 0x53;

/// The signature pattern of a basic algorithm.
pub fn fake_signature(alg: SigAlg) -> Vec<u8> {
    vec![0xa0 | alg.code(); alg.signature_len()]
}

#[derive(Debug)]
struct FakeHash;

impl Hash for FakeHash {
    fn start(&self) -> Box<dyn HashContext> {
        Box::new(FakeHashContext)
    }
}

struct FakeHashContext;

impl HashContext for FakeHashContext {
    fn update(&mut self, _data: &[u8]) {}
    fn fork_finish(&self) -> [u8; HASH_LEN] {
        HASH_OUT
    }
    fn fork(&self) -> Box<dyn HashContext> {
        Box::new(Self)
    }
    fn finish(self: Box<Self>) -> [u8; HASH_LEN] {
        HASH_OUT
    }
}

#[derive(Debug)]
struct FakeHmac;

impl Hmac for FakeHmac {
    fn mac(&self, _key: &[u8], _data: &[&[u8]]) -> [u8; HASH_LEN] {
        HMAC_OUT
    }
}

#[derive(Debug)]
struct FakeHkdf;

impl Hkdf for FakeHkdf {
    fn extract(&self, _salt: &[u8], _ikm: &[u8]) -> Secret {
        Secret::new(vec![KDF_BYTE; HASH_LEN])
    }

    fn expand(&self, _prk: &[u8], _info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        if out.len() > 255 * HASH_LEN {
            return Err(CryptoError::InvalidLength);
        }
        out.fill(KDF_BYTE);
        Ok(())
    }
}

#[derive(Debug)]
struct FakeKem(KemId);

#[derive(Debug)]
struct FakeActive {
    id: KemId,
    share: Vec<u8>,
}

fn acceptable(share: &[u8], len: usize) -> Result<(), CryptoError> {
    if share.len() != len || share.first() == Some(&0xff) {
        return Err(CryptoError::InvalidKey);
    }
    Ok(())
}

impl KeyExchange for FakeKem {
    fn id(&self) -> KemId {
        self.0
    }

    fn start(&self, _rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        Ok(Box::new(FakeActive {
            id: self.0,
            share: vec![self.0.code(); self.0.initiator_share_len()],
        }))
    }

    fn respond(
        &self,
        peer_share: &[u8],
        _rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        acceptable(peer_share, self.0.initiator_share_len())?;
        Ok(KemResponse {
            share: vec![0x80 | self.0.code(); self.0.responder_share_len()],
            secret: Secret::new(vec![SECRET_BYTE; 32]),
        })
    }

    fn dangerous_import_ephemeral(
        &self,
        _private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.start(&RNG)
    }
}

impl ActiveKeyExchange for FakeActive {
    fn share(&self) -> &[u8] {
        &self.share
    }

    fn complete(self: Box<Self>, peer_share: &[u8]) -> Result<Secret, CryptoError> {
        acceptable(peer_share, self.id.responder_share_len())?;
        Ok(Secret::new(vec![SECRET_BYTE; 32]))
    }

    fn dangerous_private_bytes(&self) -> Result<Secret, CryptoError> {
        Ok(Secret::new(vec![0; 32]))
    }
}

#[derive(Debug)]
struct FakeSig(SigAlg);

/// A fake signing key: the 32-byte private key, repeated, is the public key.
#[derive(Debug)]
struct FakeKey {
    alg: SigAlg,
    private: [u8; 32],
}

impl SignatureAlgorithm for FakeSig {
    fn id(&self) -> SigAlg {
        self.0
    }

    fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError> {
        let mut private = [0u8; 32];
        rng.fill(&mut private)?;
        Ok(Box::new(FakeKey {
            alg: self.0,
            private,
        }))
    }

    fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        Ok(Box::new(FakeKey {
            alg: self.0,
            private: private.try_into().map_err(|_| CryptoError::InvalidKey)?,
        }))
    }

    fn verify(&self, public: &[u8], _msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        if public.len() != self.0.public_key_len() || sig != fake_signature(self.0) {
            return Err(CryptoError::BadSignature);
        }
        Ok(())
    }
}

impl SigningKey for FakeKey {
    fn algorithm(&self) -> SigAlg {
        self.alg
    }

    fn public_key(&self) -> Vec<u8> {
        self.private
            .iter()
            .copied()
            .cycle()
            .take(self.alg.public_key_len())
            .collect()
    }

    fn sign(&self, _msg: &[u8], _rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        Ok(fake_signature(self.alg))
    }

    fn private_bytes(&self) -> Secret {
        Secret::from_slice(&self.private)
    }
}

#[derive(Debug)]
struct FakeAead(AeadId);

#[derive(Debug)]
struct FakeRecordKey;

impl RecordProtection for FakeAead {
    fn id(&self) -> AeadId {
        self.0
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        if key.len() != self.0.key_len() {
            return Err(CryptoError::InvalidLength);
        }
        Ok(Box::new(FakeRecordKey))
    }
}

impl RecordKey for FakeRecordKey {
    fn seal(
        &self,
        _nonce: &[u8; NONCE_LEN],
        _aad: &[u8],
        _in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        Ok(AEAD_TAG)
    }

    fn open(
        &self,
        _nonce: &[u8; NONCE_LEN],
        _aad: &[u8],
        _in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        if *tag != AEAD_TAG {
            return Err(CryptoError::DecryptFailed);
        }
        Ok(())
    }
}
