//! Hybrids composed from a provider's basic algorithms, and the uniform API over
//! [`Kem`] and [`Signature`].
//!
//! - `x25519mlkem768`: shares and secrets concatenate the ML-KEM-768 part first, then X25519,
//!   exactly as X25519MLKEM768 in draft-ietf-tls-ecdhe-mlkem §3: device share
//!   `ek (1184) || x25519 (32)`, gateway share `ct (1088) || x25519 (32)`, secret
//!   `ss_mlkem (32) || ss_x25519 (32)`.
//! - `ed25519+mldsa65`: public keys, private keys and signatures concatenate the Ed25519 part
//!   first. Both halves sign `HYBRID_SIG_PREFIX || msg` (as draft-ietf-lamps-pq-composite-sigs
//!   prefixes the composite's name), so a half cannot be stripped and passed off as a plain
//!   `ed25519` or `mldsa65` signature of the same protocol message. Both halves must verify.

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::{
    ActiveKeyExchange, CryptoError, Kem, KemResponse, Secret, SecureRandom, Signature, SigningKey,
};
use crate::suite::{KemId, SigAlg};

/// Prefix both halves of an `ed25519+mldsa65` signature sign before the message.
pub const HYBRID_SIG_PREFIX: &[u8] = b"iotseal v1 composite ed25519+mldsa65\0";

/// The message each half of a composite signature signs.
pub fn hybrid_message(msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(HYBRID_SIG_PREFIX.len() + msg.len());
    m.extend_from_slice(HYBRID_SIG_PREFIX);
    m.extend_from_slice(msg);
    m
}

fn split(data: &[u8], first: usize, total: usize) -> Result<(&[u8], &[u8]), CryptoError> {
    if data.len() != total {
        return Err(CryptoError::InvalidKey);
    }
    Ok(data.split_at(first))
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

impl Kem {
    /// Which key exchange this is.
    pub fn id(&self) -> KemId {
        match self {
            Self::Basic(k) => k.id(),
            Self::Hybrid { .. } => KemId::X25519MlKem768,
        }
    }

    /// Device side: a fresh ephemeral key pair.
    pub fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        match self {
            Self::Basic(k) => k.start(rng),
            Self::Hybrid { pq, classic } => {
                let pq = pq.start(rng)?;
                let classic = classic.start(rng)?;
                Ok(Box::new(HybridActive::new(pq, classic)))
            }
        }
    }

    /// Gateway side: answers the device's share.
    pub fn respond(&self, peer: &[u8], rng: &dyn SecureRandom) -> Result<KemResponse, CryptoError> {
        match self {
            Self::Basic(k) => k.respond(peer, rng),
            Self::Hybrid { pq, classic } => {
                let id = KemId::MlKem768;
                let (p, c) = split(
                    peer,
                    id.initiator_share_len(),
                    KemId::X25519MlKem768.initiator_share_len(),
                )?;
                let a = pq.respond(p, rng)?;
                let b = classic.respond(c, rng)?;
                Ok(KemResponse {
                    share: concat(&a.share, &b.share),
                    secret: Secret::new(concat(a.secret.as_bytes(), b.secret.as_bytes())),
                })
            }
        }
    }

    /// Test-only: rebuilds an ephemeral key pair (hybrid: `mlkem_dk || x25519_scalar`).
    #[doc(hidden)]
    pub fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        match self {
            Self::Basic(k) => k.dangerous_import_ephemeral(private),
            Self::Hybrid { pq, classic } => {
                if private.len() != 2400 + 32 {
                    return Err(CryptoError::InvalidKey);
                }
                let (p, c) = private.split_at(2400);
                let pq = pq.dangerous_import_ephemeral(p)?;
                let classic = classic.dangerous_import_ephemeral(c)?;
                Ok(Box::new(HybridActive::new(pq, classic)))
            }
        }
    }
}

#[derive(Debug)]
struct HybridActive {
    pq: Box<dyn ActiveKeyExchange>,
    classic: Box<dyn ActiveKeyExchange>,
    share: Vec<u8>,
}

impl HybridActive {
    fn new(pq: Box<dyn ActiveKeyExchange>, classic: Box<dyn ActiveKeyExchange>) -> Self {
        let share = concat(pq.share(), classic.share());
        Self { pq, classic, share }
    }
}

impl ActiveKeyExchange for HybridActive {
    fn share(&self) -> &[u8] {
        &self.share
    }

    fn complete(self: Box<Self>, peer: &[u8]) -> Result<Secret, CryptoError> {
        let (p, c) = split(
            peer,
            KemId::MlKem768.responder_share_len(),
            KemId::X25519MlKem768.responder_share_len(),
        )?;
        let a = self.pq.complete(p)?;
        let b = self.classic.complete(c)?;
        Ok(Secret::new(concat(a.as_bytes(), b.as_bytes())))
    }

    fn dangerous_private_bytes(&self) -> Result<Secret, CryptoError> {
        let a = self.pq.dangerous_private_bytes()?;
        let b = self.classic.dangerous_private_bytes()?;
        Ok(Secret::new(concat(a.as_bytes(), b.as_bytes())))
    }
}

impl Signature {
    /// Which algorithm this is.
    pub fn id(&self) -> SigAlg {
        match self {
            Self::Basic(s) => s.id(),
            Self::Hybrid { .. } => SigAlg::Ed25519MlDsa65,
        }
    }

    /// Generates a key pair.
    pub fn generate(&self, rng: &dyn SecureRandom) -> Result<Box<dyn SigningKey>, CryptoError> {
        match self {
            Self::Basic(s) => s.generate(rng),
            Self::Hybrid { classic, pq } => Ok(Box::new(HybridKey {
                classic: classic.generate(rng)?,
                pq: pq.generate(rng)?,
            })),
        }
    }

    /// Loads a private key (composite: `ed25519_seed || mldsa_seed`).
    pub fn load(&self, private: &[u8]) -> Result<Box<dyn SigningKey>, CryptoError> {
        match self {
            Self::Basic(s) => s.load(private),
            Self::Hybrid { classic, pq } => {
                let (a, b) = split(private, 32, 64)?;
                Ok(Box::new(HybridKey {
                    classic: classic.load(a)?,
                    pq: pq.load(b)?,
                }))
            }
        }
    }

    /// Verifies; for the composite both halves must verify.
    pub fn verify(&self, public: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        match self {
            Self::Basic(s) => s.verify(public, msg, sig),
            Self::Hybrid { classic, pq } => {
                let (pa, pb) = split(public, 32, SigAlg::Ed25519MlDsa65.public_key_len())
                    .map_err(|_| CryptoError::BadSignature)?;
                let (sa, sb) = split(sig, 64, SigAlg::Ed25519MlDsa65.signature_len())
                    .map_err(|_| CryptoError::BadSignature)?;
                let m = hybrid_message(msg);
                // Both are always checked; either failing fails the whole.
                let a = classic.verify(pa, &m, sa);
                let b = pq.verify(pb, &m, sb);
                a.and(b)
            }
        }
    }
}

#[derive(Debug)]
struct HybridKey {
    classic: Box<dyn SigningKey>,
    pq: Box<dyn SigningKey>,
}

impl SigningKey for HybridKey {
    fn algorithm(&self) -> SigAlg {
        SigAlg::Ed25519MlDsa65
    }

    fn public_key(&self) -> Vec<u8> {
        concat(&self.classic.public_key(), &self.pq.public_key())
    }

    fn sign(&self, msg: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        let m = hybrid_message(msg);
        Ok(concat(
            &self.classic.sign(&m, rng)?,
            &self.pq.sign(&m, rng)?,
        ))
    }

    fn private_bytes(&self) -> Secret {
        Secret::new(concat(
            self.classic.private_bytes().as_bytes(),
            self.pq.private_bytes().as_bytes(),
        ))
    }
}
