use iotseal_proto::crypto::{CryptoError, HASH_LEN};

use super::unhex;
use crate::PROVIDER;

#[test]
fn sha256_known_answers_and_fork() {
    let abc = unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let empty = unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(PROVIDER.hash.hash(b"abc").to_vec(), abc);
    assert_eq!(PROVIDER.hash.hash(b"").to_vec(), empty);
    let mut ctx = PROVIDER.hash.start();
    assert_eq!(ctx.fork_finish().to_vec(), empty);
    ctx.update(b"a");
    ctx.update(b"bc");
    assert_eq!(ctx.fork_finish().to_vec(), abc);
    let mut forked = ctx.fork();
    ctx.update(b"def");
    forked.update(b"xyz");
    assert_eq!(ctx.finish(), PROVIDER.hash.hash(b"abcdef"));
    assert_eq!(forked.finish(), PROVIDER.hash.hash(b"abcxyz"));
}

/// RFC 4231 test cases 1 (short key) and 6 (131-byte key, longer than a block).
#[test]
fn hmac_known_answers() {
    let tc1 = PROVIDER.hmac.mac(&[0x0b; 20], &[b"Hi ", b"There"]);
    assert_eq!(
        hex::encode(tc1),
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    );
    let tc6 = PROVIDER.hmac.mac(
        &[0xaa; 131],
        &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
    );
    assert_eq!(
        hex::encode(tc6),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
    assert_eq!(
        PROVIDER.hmac.mac(b"", &[]),
        PROVIDER.hmac.mac(&[0u8; 32], &[b""])
    );
}

/// RFC 5869 test cases 1 and 3 (empty salt and info).
#[test]
fn hkdf_known_answers() {
    let ikm = [0x0b; 22];
    let prk = PROVIDER
        .hkdf
        .extract(&unhex("000102030405060708090a0b0c"), &ikm);
    assert_eq!(
        hex::encode(prk.as_bytes()),
        "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    );
    let mut okm = [0u8; 42];
    let info = unhex("f0f1f2f3f4f5f6f7f8f9");
    PROVIDER
        .hkdf
        .expand(prk.as_bytes(), &[&info[..3], &info[3..]], &mut okm)
        .unwrap();
    assert_eq!(
        hex::encode(okm),
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    );

    let prk = PROVIDER.hkdf.extract(&[], &ikm);
    assert_eq!(
        hex::encode(prk.as_bytes()),
        "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04"
    );
    assert_eq!(prk, PROVIDER.hkdf.extract(&[0u8; 32], &ikm));
    PROVIDER.hkdf.expand(prk.as_bytes(), &[], &mut okm).unwrap();
    assert_eq!(
        hex::encode(okm),
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    );
}

/// HKDF-Expand written out with HMAC (RFC 5869 §2.3), for comparison.
fn expand_by_hand(prk: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut t = Vec::new();
    let mut i = 1u8;
    while out.len() < len {
        t = PROVIDER.hmac.mac(prk, &[&t, info, &[i]]).to_vec();
        out.extend_from_slice(&t);
        i = i.wrapping_add(1);
    }
    out.truncate(len);
    out
}

#[test]
fn hkdf_lengths() {
    let prk = PROVIDER.hkdf.extract(b"salt", b"ikm");
    for len in [0usize, 1, 31, 32, 33, 64, 100, 255 * HASH_LEN] {
        let mut out = vec![0u8; len];
        PROVIDER
            .hkdf
            .expand(prk.as_bytes(), &[b"info"], &mut out)
            .unwrap();
        assert_eq!(out, expand_by_hand(prk.as_bytes(), b"info", len), "{len}");
    }
    let mut too_long = vec![0u8; 255 * HASH_LEN + 1];
    assert_eq!(
        PROVIDER
            .hkdf
            .expand(prk.as_bytes(), &[b"info"], &mut too_long),
        Err(CryptoError::InvalidLength)
    );
    let mut out = [0u8; 32];
    assert_eq!(
        PROVIDER.hkdf.expand(&prk.as_bytes()[..31], &[], &mut out),
        Err(CryptoError::InvalidLength)
    );
    // PRKs longer than a block behave as the HMAC key they are (hashed first), no panic.
    for prk_len in [64usize, 65, 100] {
        let long: Vec<u8> = (0..prk_len).map(|i| i as u8).collect();
        let mut out = vec![0u8; 70];
        PROVIDER.hkdf.expand(&long, &[b"x"], &mut out).unwrap();
        assert_eq!(out, expand_by_hand(&long, b"x", 70), "{prk_len}");
    }
}
