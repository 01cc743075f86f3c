//! Record protection: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 and
//! AES-256-CTR + HMAC-SHA256 (encrypt-then-MAC).
//!
//! Key material lives only inside aws-lc objects, which wipe it when dropped (aws-lc-rs
//! zeroizes its AES key schedules, and aws-lc cleanses its AEAD and HMAC contexts on free);
//! this module keeps no copy of its own.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{self, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use iotseal_proto::crypto::{CryptoError, NONCE_LEN, RecordKey, RecordProtection, TAG_LEN};
use iotseal_proto::suite::AeadId;
use zeroize::Zeroize;

// ---------------------------------------------------------------------------------------------
// AEADs

/// An AEAD from `aws_lc_rs::aead`, used with explicit nonces and detached tags.
#[derive(Debug, Clone, Copy)]
struct AwsAead {
    id: AeadId,
    alg: &'static aead::Algorithm,
}

impl AwsAead {
    fn key(self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        if key.len() != self.id.key_len() {
            return Err(CryptoError::InvalidKey);
        }
        let unbound = UnboundKey::new(self.alg, key).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(AeadKey(LessSafeKey::new(unbound))))
    }
}

/// AES-128-GCM (16-byte key, 12-byte nonce, 16-byte tag).
#[derive(Debug, Clone, Copy, Default)]
pub struct Aes128Gcm;

impl RecordProtection for Aes128Gcm {
    fn id(&self) -> AeadId {
        AeadId::Aes128Gcm
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        AwsAead {
            id: self.id(),
            alg: &aead::AES_128_GCM,
        }
        .key(key)
    }
}

/// AES-256-GCM (32-byte key, 12-byte nonce, 16-byte tag).
#[derive(Debug, Clone, Copy, Default)]
pub struct Aes256Gcm;

impl RecordProtection for Aes256Gcm {
    fn id(&self) -> AeadId {
        AeadId::Aes256Gcm
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        AwsAead {
            id: self.id(),
            alg: &aead::AES_256_GCM,
        }
        .key(key)
    }
}

/// ChaCha20-Poly1305 (RFC 8439; 32-byte key, 12-byte nonce, 16-byte tag).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChaCha20Poly1305;

impl RecordProtection for ChaCha20Poly1305 {
    fn id(&self) -> AeadId {
        AeadId::ChaCha20Poly1305
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        AwsAead {
            id: self.id(),
            alg: &aead::CHACHA20_POLY1305,
        }
        .key(key)
    }
}

struct AeadKey(LessSafeKey);

impl core::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("AeadKey").field(self.0.algorithm()).finish()
    }
}

impl RecordKey for AeadKey {
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                in_out,
            )
            // Only a record longer than the algorithm's per-nonce limit (~64 GiB) can fail.
            .map_err(|_| CryptoError::InvalidLength)?;
        tag.as_ref()
            .try_into()
            .map_err(|_| CryptoError::InvalidLength)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let result = self.0.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            tag,
            in_out,
        );
        if result.is_err() {
            // aws-lc's EVP_AEAD_CTX_open_gather already zeroes the output on failure (GCM
            // decrypts before it compares tags); wipe again so that does not have to be
            // relied upon.
            in_out.zeroize();
            return Err(CryptoError::DecryptFailed);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// AES-256-CTR + HMAC-SHA256

/// AES-256-CTR then HMAC-SHA256 truncated to 16 bytes (encrypt-then-MAC).
///
/// Key: `enc_key (32) || mac_key (32)`. Keystream: AES-256-CTR from the 16-byte counter block
/// `nonce (12) || be32(0)`. Tag: the first 16 bytes of
/// `HMAC-SHA256(mac_key, nonce || be64(len(aad)) || aad || ciphertext)`, checked in constant time
/// before anything is decrypted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Aes256CtrHmacSha256;

const CTR_KEY_LEN: usize = 32;

impl RecordProtection for Aes256CtrHmacSha256 {
    fn id(&self) -> AeadId {
        AeadId::Aes256CtrHmacSha256
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        if key.len() != self.id().key_len() {
            return Err(CryptoError::InvalidKey);
        }
        let (enc, mac) = key.split_at(CTR_KEY_LEN);
        let unbound =
            UnboundCipherKey::new(&cipher::AES_256, enc).map_err(|_| CryptoError::InvalidKey)?;
        // CTR encryption and decryption are the same operation: one encrypting key does both.
        let enc = EncryptingKey::ctr(unbound).map_err(|_| CryptoError::InvalidKey)?;
        let mac = hmac::Key::new(hmac::HMAC_SHA256, mac);
        Ok(Box::new(CtrHmacKey { enc, mac }))
    }
}

struct CtrHmacKey {
    enc: EncryptingKey,
    mac: hmac::Key,
}

impl core::fmt::Debug for CtrHmacKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CtrHmacKey").finish_non_exhaustive()
    }
}

impl CtrHmacKey {
    /// XORs the keystream for `nonce` into `in_out`.
    ///
    /// The initial counter block is `nonce || be32(0)`. aws-lc's CTR mode increments the
    /// whole 128-bit block, where the specification increments only the low 32 bits; the two
    /// differ only once the 32-bit counter wraps, after 2^32 blocks = 64 GiB in one record,
    /// far beyond any record size the protocol allows.
    fn apply_keystream(
        &self,
        nonce: &[u8; NONCE_LEN],
        in_out: &mut [u8],
    ) -> Result<(), CryptoError> {
        let mut block = [0u8; 16];
        block[..NONCE_LEN].copy_from_slice(nonce);
        let context = EncryptionContext::Iv128(FixedLength::from(block));
        self.enc
            .less_safe_encrypt(in_out, context)
            .map(|_| ())
            .map_err(|_| CryptoError::InvalidLength)
    }

    /// The full HMAC-SHA256 over `nonce || be64(len(aad)) || aad || ciphertext`.
    fn tag(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], ciphertext: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(nonce);
        ctx.update(&(aad.len() as u64).to_be_bytes());
        ctx.update(aad);
        ctx.update(ciphertext);
        ctx.sign()
    }
}

impl RecordKey for CtrHmacKey {
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        if let Err(e) = self.apply_keystream(nonce, in_out) {
            // Cannot happen for CTR; never leave a half-encrypted buffer behind.
            in_out.zeroize();
            return Err(e);
        }
        let full = self.tag(nonce, aad, in_out);
        full.as_ref()[..TAG_LEN]
            .try_into()
            .map_err(|_| CryptoError::InvalidLength)
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let full = self.tag(nonce, aad, in_out);
        // Constant-time comparison (CRYPTO_memcmp), before anything is decrypted: on failure
        // `in_out` still holds the ciphertext only.
        constant_time::verify_slices_are_equal(&full.as_ref()[..TAG_LEN], tag)
            .map_err(|_| CryptoError::DecryptFailed)?;
        if let Err(e) = self.apply_keystream(nonce, in_out) {
            in_out.zeroize();
            return Err(e);
        }
        Ok(())
    }
}
