//! Record protection: AES-GCM (aes-gcm), ChaCha20-Poly1305 (chacha20poly1305) and
//! AES-256-CTR + HMAC-SHA256 encrypt-then-MAC (aes, ctr, hmac).
//!
//! All keys wipe themselves on drop (the backends' `zeroize` features). Every `open` checks
//! the tag in constant time before it decrypts anything, so on failure the buffer still holds
//! the ciphertext, never plaintext.

use alloc::boxed::Box;
use core::fmt;

use aes_gcm::aead::array::Array;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{AeadInOut, KeyInit};
use ctr::cipher::{InnerIvInit, StreamCipher};
use hmac::Mac;
use iotseal_proto::crypto::{CryptoError, NONCE_LEN, RecordKey, RecordProtection, TAG_LEN};
use iotseal_proto::suite::AeadId;
use subtle::ConstantTimeEq;

/// AES-128-GCM.
#[derive(Clone, Copy, Debug, Default)]
pub struct Aes128Gcm;

/// AES-256-GCM.
#[derive(Clone, Copy, Debug, Default)]
pub struct Aes256Gcm;

/// ChaCha20-Poly1305 (RFC 8439).
#[derive(Clone, Copy, Debug, Default)]
pub struct ChaCha20Poly1305;

/// AES-256-CTR then HMAC-SHA256 truncated to 16 bytes (encrypt-then-MAC).
///
/// Key `enc_key (32) || mac_key (32)`; keystream AES-256-CTR with counter block
/// `nonce || be32(counter)`, counter from 0; tag the first 16 bytes of
/// HMAC-SHA256(mac_key, nonce || be64(len(aad)) || aad || ciphertext).
#[derive(Clone, Copy, Debug, Default)]
pub struct Aes256CtrHmacSha256;

// ---------------------------------------------------------------------------------------------
// The AEAD crates

/// A key of one of the RustCrypto AEADs (96-bit nonce, 128-bit tag).
struct AeadKey<C> {
    cipher: C,
    id: AeadId,
}

impl<C> fmt::Debug for AeadKey<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn aead_key<C>(id: AeadId, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError>
where
    C: AeadInOut<NonceSize = U12, TagSize = U16> + KeyInit + Send + Sync + 'static,
{
    if key.len() != id.key_len() {
        return Err(CryptoError::InvalidKey);
    }
    let cipher = C::new_from_slice(key).map_err(|_| CryptoError::InvalidKey)?;
    Ok(Box::new(AeadKey { cipher, id }))
}

impl<C> RecordKey for AeadKey<C>
where
    C: AeadInOut<NonceSize = U12, TagSize = U16> + Send + Sync,
{
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .cipher
            .encrypt_inout_detached(nonce.into(), aad, in_out.into())
            .map_err(|_| CryptoError::InvalidLength)?;
        Ok(tag.into())
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        // Both crates compute the tag over the ciphertext, compare in constant time and only
        // then apply the keystream: on failure `in_out` is untouched.
        let tag: &Array<u8, U16> = tag.into();
        self.cipher
            .decrypt_inout_detached(nonce.into(), aad, in_out.into(), tag)
            .map_err(|_| CryptoError::DecryptFailed)
    }
}

impl RecordProtection for Aes128Gcm {
    fn id(&self) -> AeadId {
        AeadId::Aes128Gcm
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        aead_key::<aes_gcm::Aes128Gcm>(self.id(), key)
    }
}

impl RecordProtection for Aes256Gcm {
    fn id(&self) -> AeadId {
        AeadId::Aes256Gcm
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        aead_key::<aes_gcm::Aes256Gcm>(self.id(), key)
    }
}

impl RecordProtection for ChaCha20Poly1305 {
    fn id(&self) -> AeadId {
        AeadId::ChaCha20Poly1305
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        aead_key::<chacha20poly1305::ChaCha20Poly1305>(self.id(), key)
    }
}

// ---------------------------------------------------------------------------------------------
// AES-256-CTR + HMAC-SHA256

type HmacState = hmac::Hmac<sha2::Sha256>;
type Ctr<'a> = ctr::Ctr32BE<&'a aes::Aes256>;

/// Encrypt-then-MAC key: the expanded AES key schedule and the keyed HMAC state (inner and
/// outer SHA-256 states after the padded key), both wiped on drop.
struct CtrHmacKey {
    aes: aes::Aes256,
    mac: HmacState,
}

impl fmt::Debug for CtrHmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CtrHmacKey").finish_non_exhaustive()
    }
}

impl CtrHmacKey {
    fn keystream(&self, nonce: &[u8; NONCE_LEN]) -> Ctr<'_> {
        let mut block = [0u8; 16];
        block[..NONCE_LEN].copy_from_slice(nonce);
        // Counter (last four bytes) starts at 0.
        Ctr::from_core(ctr::CtrCore::inner_iv_init(&self.aes, (&block).into()))
    }

    fn tag(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], ciphertext: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(nonce);
        mac.update(&(aad.len() as u64).to_be_bytes());
        mac.update(aad);
        mac.update(ciphertext);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}

impl RecordKey for CtrHmacKey {
    fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        // Refuses (untouched) input beyond the 2^32-block counter space.
        self.keystream(nonce)
            .try_apply_keystream(in_out)
            .map_err(|_| CryptoError::InvalidLength)?;
        Ok(self.tag(nonce, aad, in_out))
    }

    fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let expected = self.tag(nonce, aad, in_out);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(CryptoError::DecryptFailed);
        }
        self.keystream(nonce)
            .try_apply_keystream(in_out)
            .map_err(|_| CryptoError::DecryptFailed)
    }
}

impl RecordProtection for Aes256CtrHmacSha256 {
    fn id(&self) -> AeadId {
        AeadId::Aes256CtrHmacSha256
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        if key.len() != self.id().key_len() {
            return Err(CryptoError::InvalidKey);
        }
        let (enc_key, mac_key) = key.split_at(32);
        let aes = aes::Aes256::new_from_slice(enc_key).map_err(|_| CryptoError::InvalidKey)?;
        let mac =
            <HmacState as KeyInit>::new_from_slice(mac_key).map_err(|_| CryptoError::InvalidKey)?;
        Ok(Box::new(CtrHmacKey { aes, mac }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;
    use alloc::vec::Vec;

    const ALL: [&dyn RecordProtection; 4] = [
        &Aes128Gcm,
        &Aes256Gcm,
        &ChaCha20Poly1305,
        &Aes256CtrHmacSha256,
    ];

    fn key_for(alg: &dyn RecordProtection) -> Box<dyn RecordKey> {
        let bytes: Vec<u8> = (0..alg.id().key_len() as u8).collect();
        alg.key(&bytes).unwrap()
    }

    #[test]
    fn seal_open_round_trip() {
        for alg in ALL {
            let key = key_for(alg);
            for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 1000] {
                let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut buf = plain.clone();
                let nonce = [len as u8; 12];
                let tag = key.seal(&nonce, b"aad", &mut buf).unwrap();
                if len > 0 {
                    assert_ne!(buf, plain, "{}", alg.id());
                }
                key.open(&nonce, b"aad", &mut buf, &tag).unwrap();
                assert_eq!(buf, plain, "{}", alg.id());
            }
        }
    }

    #[test]
    fn tampering_refused_and_no_plaintext_released() {
        for alg in ALL {
            let key = key_for(alg);
            let plain = *b"sensor reading: 21.5 C, battery 87%";
            let nonce = [9u8; 12];
            let mut sealed = plain;
            let tag = key.seal(&nonce, b"header", &mut sealed).unwrap();

            let check = |nonce: &[u8; 12], aad: &[u8], ct: &[u8], tag: &[u8; 16]| {
                let mut buf = ct.to_vec();
                assert_eq!(
                    key.open(nonce, aad, &mut buf, tag).unwrap_err(),
                    CryptoError::DecryptFailed,
                    "{}",
                    alg.id()
                );
                // The buffer still holds exactly what was passed in: no plaintext.
                assert_eq!(buf, ct, "{}", alg.id());
            };
            let mut bad_tag = tag;
            bad_tag[15] ^= 0x80;
            check(&nonce, b"header", &sealed, &bad_tag);
            let mut bad_ct = sealed;
            bad_ct[0] ^= 1;
            check(&nonce, b"header", &bad_ct, &tag);
            check(&nonce, b"headeR", &sealed, &tag);
            check(&nonce, b"", &sealed, &tag);
            // The nonce is authenticated too (the encrypt-then-MAC tag covers it).
            check(&[8u8; 12], b"header", &sealed, &tag);
            check(&nonce, b"header", &sealed[..sealed.len() - 1], &tag);
            // A different key of the same algorithm.
            let other = alg.key(&alloc::vec![0xa5; alg.id().key_len()]).unwrap();
            let mut buf = sealed;
            assert!(other.open(&nonce, b"header", &mut buf, &tag).is_err());
            assert_eq!(buf, sealed);
        }
    }

    #[test]
    fn wrong_key_lengths_refused() {
        for alg in ALL {
            let n = alg.id().key_len();
            for len in [0, 1, 16, 32, 64, n - 1, n + 1] {
                if len == n {
                    continue;
                }
                let key = alloc::vec![1u8; len];
                assert_eq!(
                    alg.key(&key).unwrap_err(),
                    CryptoError::InvalidKey,
                    "{} {len}",
                    alg.id()
                );
            }
        }
    }

    fn kat(
        alg: &dyn RecordProtection,
        key: &str,
        nonce: &str,
        aad: &str,
        plain: &[u8],
        ct: &str,
        tag: &str,
    ) {
        let key = alg.key(&hex(key)).unwrap();
        let nonce: [u8; 12] = hex(nonce).try_into().unwrap();
        let aad = hex(aad);
        let mut buf = plain.to_vec();
        let t = key.seal(&nonce, &aad, &mut buf).unwrap();
        assert_eq!(buf, hex(ct), "{}", alg.id());
        assert_eq!(t.as_slice(), hex(tag), "{}", alg.id());
        key.open(&nonce, &aad, &mut buf, &t).unwrap();
        assert_eq!(buf, plain);
    }

    #[test]
    fn chacha20poly1305_rfc8439_2_8_2() {
        kat(
            &ChaCha20Poly1305,
            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
            "070000004041424344454647",
            "50515253c0c1c2c3c4c5c6c7",
            b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip \
              for the future, sunscreen would be it.",
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
             3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
             92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
             3ff4def08e4b7a9de576d26586cec64b6116",
            "1ae10b594f09e26a7e902ecbd0600691",
        );
    }

    /// The GCM specification's (McGrew & Viega) test case 4: AES-128, 60-byte plaintext, AAD.
    #[test]
    fn aes128gcm_gcm_spec_test_case_4() {
        kat(
            &Aes128Gcm,
            "feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            &hex(
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
                 1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
            ),
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e
             21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
            "5bc94fbc3221a5db94fae95ae7121a47",
        );
    }

    /// NIST CAVS `gcmEncryptExtIV256.rsp` (Keylen 256, IVlen 96, PTlen 128, AADlen 128).
    #[test]
    fn aes256gcm_nist_cavs() {
        kat(
            &Aes256Gcm,
            "92e11dcdaa866f5ce790fd24501f92509aacf4cb8b1339d50c9c1240935dd08b",
            "ac93a1a6145299bde902f21a",
            "1e0889016f67601c8ebea4943bc23ad6",
            &hex("2d71bcfa914e4ac045b2aa60955fad24"),
            "8995ae2e6df3dbf96fac7b7137bae67f",
            "eca5aa77d51d4a0a14d9c51e1da474ab",
        );
    }

    /// The encrypt-then-MAC construction, rebuilt from the raw AES block function and HMAC.
    #[test]
    fn aes256ctr_hmacsha256_matches_its_definition() {
        use aes::cipher::BlockCipherEncrypt;

        let enc_key = [0x11u8; 32];
        let mac_key = [0x22u8; 32];
        let nonce = *b"nonce-12byte";
        let aad = b"associated";
        let plain: Vec<u8> = (0..50u8).collect();

        let mut expected = plain.clone();
        let aes = aes::Aes256::new((&enc_key).into());
        for (i, chunk) in expected.chunks_mut(16).enumerate() {
            let mut block = [0u8; 16];
            block[..12].copy_from_slice(&nonce);
            block[12..].copy_from_slice(&(i as u32).to_be_bytes());
            let mut block = block.into();
            aes.encrypt_block(&mut block);
            chunk
                .iter_mut()
                .zip(block.iter())
                .for_each(|(p, k)| *p ^= k);
        }
        let mut mac = <HmacState as KeyInit>::new_from_slice(&mac_key).unwrap();
        mac.update(&nonce);
        mac.update(&(aad.len() as u64).to_be_bytes());
        mac.update(aad);
        mac.update(&expected);
        let full = mac.finalize().into_bytes();

        let mut key = enc_key.to_vec();
        key.extend_from_slice(&mac_key);
        let key = Aes256CtrHmacSha256.key(&key).unwrap();
        let mut buf = plain.clone();
        let tag = key.seal(&nonce, aad, &mut buf).unwrap();
        assert_eq!(buf, expected);
        assert_eq!(tag, full[..16]);
        key.open(&nonce, aad, &mut buf, &tag).unwrap();
        assert_eq!(buf, plain);
    }

    #[test]
    fn etm_length_prefix_separates_aad_from_ciphertext() {
        // Moving a byte between AAD and ciphertext must change the tag.
        let key = key_for(&Aes256CtrHmacSha256);
        let nonce = [0u8; 12];
        let mut ct = *b"bcd";
        let tag = key.seal(&nonce, b"a", &mut ct).unwrap();
        let mut moved = Vec::from(&b"a"[..]);
        moved.extend_from_slice(&ct);
        let mut rest = moved.split_off(2);
        assert!(key.open(&nonce, &moved, &mut rest, &tag).is_err());
    }

    #[test]
    fn keys_wipe_on_drop() {
        fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroize_on_drop::<aes_gcm::Aes128Gcm>();
        zeroize_on_drop::<aes_gcm::Aes256Gcm>();
        zeroize_on_drop::<chacha20poly1305::ChaCha20Poly1305>();
        zeroize_on_drop::<aes::Aes256>();
        zeroize_on_drop::<sha2::Sha256>();
    }
}
