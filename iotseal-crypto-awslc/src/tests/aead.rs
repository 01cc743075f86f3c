use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use iotseal_proto::crypto::{CryptoError, RecordProtection};
use iotseal_proto::suite::AeadId;

use super::{TestRng, unhex};
use crate::{Aes128Gcm, Aes256CtrHmacSha256, Aes256Gcm, ChaCha20Poly1305, HmacSha256, PROVIDER};
use iotseal_proto::crypto::{Hmac, SecureRandom};

/// nonce, aad, ciphertext, tag
type Attempt<'a> = (&'a [u8; 12], &'a [u8], &'a [u8], &'a [u8; 16]);

fn key_bytes(id: AeadId, seed: u64) -> Vec<u8> {
    let mut k = vec![0u8; id.key_len()];
    TestRng::new(seed).fill(&mut k).unwrap();
    k
}

#[test]
fn round_trips_and_tampering() {
    for &id in AeadId::ALL {
        let alg = PROVIDER.aead(id).unwrap();
        let key = alg.key(&key_bytes(id, 1)).unwrap();
        for len in [0usize, 1, 15, 16, 17, 64, 1000] {
            let plain: Vec<u8> = (0..len).map(|i| (i as u8) | 0x80).collect();
            let nonce = [7u8; 12];
            let aad = b"record header";
            let mut buf = plain.clone();
            let tag = key.seal(&nonce, aad, &mut buf).unwrap();
            if len > 0 {
                assert_ne!(buf, plain, "{id} {len}");
            }
            let ct = buf.clone();
            key.open(&nonce, aad, &mut buf, &tag).unwrap();
            assert_eq!(buf, plain, "{id} {len}");

            // Tampered tag, ciphertext, aad, nonce: refused, and no plaintext left behind.
            let mut bad_tag = tag;
            bad_tag[15] ^= 1;
            let mut bad_nonce = nonce;
            bad_nonce[0] ^= 1;
            let mut bad_ct = ct.clone();
            if len > 0 {
                bad_ct[len / 2] ^= 0x80;
            }
            let attempts: [Attempt<'_>; 4] = [
                (&nonce, aad, &ct, &bad_tag),
                (&nonce, b"record headeR", &ct, &tag),
                (&bad_nonce, aad, &ct, &tag),
                (&nonce, aad, &bad_ct, &tag),
            ];
            for (i, (n, a, c, t)) in attempts.into_iter().enumerate() {
                if i == 3 && len == 0 {
                    continue;
                }
                let mut buf = c.to_vec();
                assert_eq!(
                    key.open(n, a, &mut buf, t),
                    Err(CryptoError::DecryptFailed),
                    "{id} {len} {i}"
                );
                if len > 0 {
                    assert_ne!(buf, plain, "{id} {len} {i}: plaintext left in the buffer");
                }
            }
        }
    }
}

#[test]
fn failed_gcm_open_leaves_zeros_and_etm_leaves_ciphertext() {
    for &id in AeadId::ALL {
        let key = PROVIDER.aead(id).unwrap().key(&key_bytes(id, 2)).unwrap();
        let mut buf = vec![0x55u8; 100];
        let mut tag = key.seal(&[0; 12], b"", &mut buf).unwrap();
        let ct = buf.clone();
        tag[0] ^= 1;
        assert!(key.open(&[0; 12], b"", &mut buf, &tag).is_err());
        if id == AeadId::Aes256CtrHmacSha256 {
            // The tag is checked before decryption: the buffer was never touched.
            assert_eq!(buf, ct);
        } else {
            assert_eq!(buf, vec![0u8; 100]);
        }
    }
}

#[test]
fn wrong_key_lengths_are_refused() {
    for &id in AeadId::ALL {
        let alg = PROVIDER.aead(id).unwrap();
        for len in [0, id.key_len() - 1, id.key_len() + 1, 24] {
            if len == id.key_len() {
                continue;
            }
            assert_eq!(
                alg.key(&vec![0u8; len]).err(),
                Some(CryptoError::InvalidKey),
                "{id} {len}"
            );
        }
    }
}

fn kat(
    alg: &dyn RecordProtection,
    key: &str,
    nonce: &str,
    aad: &str,
    plain: &str,
    ct: &str,
    tag: &str,
) {
    let key = alg.key(&unhex(key)).unwrap();
    let nonce: [u8; 12] = unhex(nonce).try_into().unwrap();
    let mut buf = unhex(plain);
    let t = key.seal(&nonce, &unhex(aad), &mut buf).unwrap();
    assert_eq!(hex::encode(&buf), ct);
    assert_eq!(hex::encode(t), tag);
    key.open(&nonce, &unhex(aad), &mut buf, &t).unwrap();
    assert_eq!(buf, unhex(plain));
}

/// RFC 8439 §2.8.2.
#[test]
fn chacha20poly1305_known_answer() {
    kat(
        &ChaCha20Poly1305,
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
        "070000004041424344454647",
        "50515253c0c1c2c3c4c5c6c7",
        &hex::encode(
            b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
        ),
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116",
        "1ae10b594f09e26a7e902ecbd0600691",
    );
}

/// The GCM specification's test cases (McGrew and Viega, as published by NIST): cases 2 and 4
/// for AES-128, case 16 for AES-256.
#[test]
fn aes_gcm_known_answers() {
    kat(
        &Aes128Gcm,
        "00000000000000000000000000000000",
        "000000000000000000000000",
        "",
        "00000000000000000000000000000000",
        "0388dace60b6a392f328c2b971b2fe78",
        "ab6e47d42cec13bdf53a67b21257bddf",
    );
    kat(
        &Aes128Gcm,
        "feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
        "5bc94fbc3221a5db94fae95ae7121a47",
    );
    kat(
        &Aes256Gcm,
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    );
}

/// Encrypt-then-MAC built independently: the keystream block by block from AES-256 in ECB
/// mode on `nonce || be32(i)`, the tag from HMAC-SHA256 over `nonce || be64(len(aad)) || aad || ct`.
#[test]
fn aes256ctr_hmacsha256_matches_its_definition() {
    let key = key_bytes(AeadId::Aes256CtrHmacSha256, 3);
    let (enc_key, mac_key) = key.split_at(32);
    let ecb = EncryptingKey::ecb(UnboundCipherKey::new(&AES_256, enc_key).unwrap()).unwrap();
    let nonce: [u8; 12] = unhex("000102030405060708090a0b").try_into().unwrap();
    let aad = b"aad bytes";
    let plain: Vec<u8> = (0..77u8).collect();

    let mut expected = plain.clone();
    for (i, chunk) in expected.chunks_mut(16).enumerate() {
        let mut block = [0u8; 16];
        block[..12].copy_from_slice(&nonce);
        block[12..].copy_from_slice(&(i as u32).to_be_bytes());
        ecb.less_safe_encrypt(&mut block, EncryptionContext::None)
            .unwrap();
        for (b, k) in chunk.iter_mut().zip(block) {
            *b ^= k;
        }
    }
    let full = HmacSha256.mac(
        mac_key,
        &[&nonce, &(aad.len() as u64).to_be_bytes(), aad, &expected],
    );

    let rk = Aes256CtrHmacSha256.key(&key).unwrap();
    let mut buf = plain.clone();
    let tag = rk.seal(&nonce, aad, &mut buf).unwrap();
    assert_eq!(buf, expected);
    assert_eq!(tag[..], full[..16]);
    rk.open(&nonce, aad, &mut buf, &tag).unwrap();
    assert_eq!(buf, plain);

    // The key halves are not interchangeable.
    let mut swapped = mac_key.to_vec();
    swapped.extend_from_slice(enc_key);
    let other = Aes256CtrHmacSha256.key(&swapped).unwrap();
    let mut buf = expected.clone();
    assert!(other.open(&nonce, aad, &mut buf, &tag).is_err());
}

#[test]
fn aead_keys_are_send_and_sync() {
    fn check<T: Send + Sync + ?Sized>(_: &T) {}
    for &id in AeadId::ALL {
        let key = PROVIDER.aead(id).unwrap().key(&key_bytes(id, 4)).unwrap();
        check(&*key);
    }
    check(&Aes256Gcm);
}
