use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use iotseal_proto::crypto::{CryptoError, SignatureAlgorithm};
use iotseal_proto::suite::SigAlg;

use super::{ScriptedRng, TestRng, unhex, wycheproof, wycheproof_tests};
use crate::sign::{is_canonical_y, is_small_order};
use crate::{EcdsaP256, Ed25519, MlDsa65, PROVIDER};

#[test]
fn round_trips_and_tampering() {
    for &id in SigAlg::ALL {
        let alg = PROVIDER.signature(id).unwrap();
        let key = alg.generate(PROVIDER.random).unwrap();
        let public = key.public_key();
        assert_eq!(public.len(), id.public_key_len(), "{id}");
        let msg = b"reading 21.5 C".to_vec();
        let sig = key.sign(&msg, PROVIDER.random).unwrap();
        assert_eq!(sig.len(), id.signature_len(), "{id}");
        alg.verify(&public, &msg, &sig).unwrap();

        let mut other_msg = msg.clone();
        other_msg[0] ^= 1;
        assert_eq!(
            alg.verify(&public, &other_msg, &sig),
            Err(CryptoError::BadSignature)
        );
        for i in [0, sig.len() / 2, sig.len() - 1] {
            let mut bad = sig.clone();
            bad[i] ^= 0x01;
            assert_eq!(
                alg.verify(&public, &msg, &bad),
                Err(CryptoError::BadSignature),
                "{id} {i}"
            );
        }
        let mut bad_public = public.clone();
        let last = bad_public.len() - 1;
        bad_public[last] ^= 1;
        assert_eq!(
            alg.verify(&bad_public, &msg, &sig),
            Err(CryptoError::BadSignature),
            "{id}"
        );
        // Wrong lengths: refused, no panic.
        let mut long_sig = sig.clone();
        long_sig.push(0);
        for s in [&[][..], &sig[..sig.len() - 1], &long_sig[..]] {
            assert_eq!(
                alg.verify(&public, &msg, s),
                Err(CryptoError::BadSignature),
                "{id}"
            );
        }
        for p in [&[][..], &public[..public.len() - 1]] {
            assert_eq!(
                alg.verify(p, &msg, &sig),
                Err(CryptoError::BadSignature),
                "{id}"
            );
        }

        // The private key exports and loads back to the same key.
        let private = key.private_bytes();
        assert_eq!(private.len(), id.private_key_len(), "{id}");
        let again = alg.load(private.as_bytes()).unwrap();
        assert_eq!(again.public_key(), public, "{id}");
        assert_eq!(again.algorithm(), id);
        alg.verify(&public, &msg, &again.sign(&msg, PROVIDER.random).unwrap())
            .unwrap();
        for bad in [0, id.private_key_len() - 1, id.private_key_len() + 1] {
            assert_eq!(
                alg.load(&vec![1u8; bad]).err(),
                Some(CryptoError::InvalidKey),
                "{id}"
            );
        }
    }
}

#[test]
fn generation_is_deterministic_for_a_seeded_rng() {
    for &id in SigAlg::ALL {
        let alg = PROVIDER.signature(id).unwrap();
        let a = alg.generate(&TestRng::new(11)).unwrap();
        let b = alg.generate(&TestRng::new(11)).unwrap();
        let c = alg.generate(&TestRng::new(12)).unwrap();
        assert_eq!(a.public_key(), b.public_key(), "{id}");
        assert_eq!(a.private_bytes(), b.private_bytes(), "{id}");
        assert_ne!(a.public_key(), c.public_key(), "{id}");
    }
    // The key is the first 32 bytes of the source.
    let mut seed = [0u8; 32];
    iotseal_proto::crypto::SecureRandom::fill(&TestRng::new(11), &mut seed).unwrap();
    for alg in [&Ed25519 as &dyn SignatureAlgorithm, &EcdsaP256, &MlDsa65] {
        let k = alg.generate(&TestRng::new(11)).unwrap();
        assert_eq!(k.private_bytes().as_bytes(), &seed[..]);
    }
}

/// RFC 8032 §7.1, test 1 and test 2.
#[test]
fn ed25519_known_answer() {
    let cases = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ];
    for (seed, public, msg, sig) in cases {
        let key = Ed25519.load(&unhex(seed)).unwrap();
        assert_eq!(key.public_key(), unhex(public));
        let s = key.sign(&unhex(msg), PROVIDER.random).unwrap();
        assert_eq!(s, unhex(sig));
        Ed25519.verify(&unhex(public), &unhex(msg), &s).unwrap();
    }
}

fn dalek_verify_strict(public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let (Ok(public), Ok(sig)) = (<[u8; 32]>::try_from(public), <[u8; 64]>::try_from(sig)) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(&public) else {
        return false;
    };
    key.verify_strict(msg, &DalekSignature::from_bytes(&sig))
        .is_ok()
}

/// The small-order table matches dalek, for every encoding of every small-order point.
#[test]
fn ed25519_small_order_table_matches_dalek() {
    let table = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];
    let mut decoded = 0;
    for enc in table {
        for sign in [0u8, 0x80] {
            let mut b: [u8; 32] = unhex(enc).try_into().unwrap();
            b[31] |= sign;
            assert!(is_small_order(&b), "{enc}");
            if let Ok(k) = VerifyingKey::from_bytes(&b) {
                assert!(k.is_weak(), "{enc} {sign}");
                decoded += 1;
            }
        }
    }
    // 8 points; with both sign bits and the two non-canonical y, dalek decodes 12 encodings
    // of them (x = 0 for y = ±1 decodes with either sign bit).
    assert!(decoded >= 10, "{decoded}");
    // And random keys are neither small order nor non-canonical.
    for i in 0..64u64 {
        let k = Ed25519.generate(&TestRng::new(1000 + i)).unwrap();
        let p: [u8; 32] = k.public_key().try_into().unwrap();
        assert!(!is_small_order(&p));
        assert!(is_canonical_y(&p));
        assert!(!VerifyingKey::from_bytes(&p).unwrap().is_weak());
    }
}

#[test]
fn ed25519_canonical_y() {
    let mut p: [u8; 32] = [0xff; 32];
    p[31] = 0x7f;
    for (low, canonical) in [(0xec, true), (0xed, false), (0xee, false), (0xff, false)] {
        p[0] = low;
        assert_eq!(is_canonical_y(&p), canonical);
        let mut with_sign = p;
        with_sign[31] |= 0x80;
        assert_eq!(is_canonical_y(&with_sign), canonical);
    }
    let mut q = p;
    q[15] = 0xfe;
    assert!(is_canonical_y(&q));
}

/// The identity as public key and as R, with S = 0, verifies for every message under plain
/// aws-lc ([0]B - [k]O = O); both dalek's `verify_strict` and this provider refuse it.
#[test]
fn ed25519_small_order_key_is_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&identity);
    for msg in [&b""[..], b"any message at all"] {
        assert!(
            raw_aws_lc_verify(&identity, msg, &sig),
            "aws-lc alone accepts it"
        );
        assert!(!dalek_verify_strict(&identity, msg, &sig));
        assert_eq!(
            Ed25519.verify(&identity, msg, &sig),
            Err(CryptoError::BadSignature)
        );
    }
}

fn raw_aws_lc_verify(public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, public)
        .verify(msg, sig)
        .is_ok()
}

/// A small-order key with a large-order R: `A = O`, `R = B`, `S = 1` gives
/// `[1]B - [k]O = B = R` for every message. Only the check on A refuses it.
#[test]
fn ed25519_small_order_key_with_large_order_r_is_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(curve25519_dalek::constants::ED25519_BASEPOINT_COMPRESSED.as_bytes());
    sig[32] = 1;
    for msg in [&b""[..], b"forged"] {
        assert!(
            raw_aws_lc_verify(&identity, msg, &sig),
            "aws-lc alone accepts it"
        );
        assert!(!dalek_verify_strict(&identity, msg, &sig));
        assert_eq!(
            Ed25519.verify(&identity, msg, &sig),
            Err(CryptoError::BadSignature)
        );
    }
}

/// A genuine key signing with `R = O`: `S = k·a` gives `[S]B - [k]A = O = R`. aws-lc accepts
/// it, `verify_strict` refuses the small-order R, and so does this provider.
#[test]
fn ed25519_small_order_r_is_refused() {
    use aws_lc_rs::digest::{Context, SHA512, digest};
    use curve25519_dalek::Scalar;

    let seed = [42u8; 32];
    let key = Ed25519.load(&seed).unwrap();
    let public = key.public_key();
    let h = digest(&SHA512, &seed);
    let mut a: [u8; 32] = h.as_ref()[..32].try_into().unwrap();
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    let a = Scalar::from_bytes_mod_order(a);
    let mut r = [0u8; 32];
    r[0] = 1;
    for msg in [&b""[..], b"small-order R"] {
        let mut ctx = Context::new(&SHA512);
        ctx.update(&r);
        ctx.update(&public);
        ctx.update(msg);
        let k: [u8; 64] = ctx.finish().as_ref().try_into().unwrap();
        let s = Scalar::from_bytes_mod_order_wide(&k) * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice(s.as_bytes());
        assert!(
            raw_aws_lc_verify(&public, msg, &sig),
            "aws-lc alone accepts it"
        );
        assert!(!dalek_verify_strict(&public, msg, &sig));
        assert_eq!(
            Ed25519.verify(&public, msg, &sig),
            Err(CryptoError::BadSignature)
        );
    }
}

/// Every Wycheproof Ed25519 vector: the expected result, and the same answer as dalek's
/// `verify_strict`.
#[test]
fn ed25519_wycheproof_agrees_with_dalek() {
    let Some(file) = wycheproof("ed25519_test.json") else {
        return;
    };
    let mut count = 0;
    for (g, t) in wycheproof_tests(&file) {
        let public = unhex(g["publicKey"]["pk"].as_str().unwrap());
        let msg = unhex(t["msg"].as_str().unwrap());
        let sig = unhex(t["sig"].as_str().unwrap());
        let ours = Ed25519.verify(&public, &msg, &sig).is_ok();
        let expected = t["result"].as_str().unwrap() == "valid";
        assert_eq!(ours, expected, "tc {}", t["tcId"]);
        assert_eq!(
            ours,
            dalek_verify_strict(&public, &msg, &sig),
            "tc {}",
            t["tcId"]
        );
        count += 1;
    }
    assert!(count > 100);
}

/// Mutated signatures and keys: this provider and dalek's `verify_strict` always agree.
#[test]
fn ed25519_mutations_agree_with_dalek() {
    let rng = TestRng::new(99);
    let mut small_order = Vec::new();
    for enc in [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ] {
        small_order.push(unhex(enc));
    }
    for round in 0..200usize {
        let key = Ed25519.generate(&rng).unwrap();
        let msg = (round as u32).to_be_bytes();
        let public = key.public_key();
        let sig = key.sign(&msg, &rng).unwrap();
        let mut cases = vec![(public.clone(), sig.clone())];
        // Flip one bit of R, S or A.
        let bit = round % 512;
        let mut s = sig.clone();
        s[bit / 8] ^= 1 << (bit % 8);
        cases.push((public.clone(), s));
        let mut p = public.clone();
        p[(round * 7) % 32] ^= 1 << (round % 8);
        cases.push((p, sig.clone()));
        // S + L (non-canonical S, same value mod L).
        let l = unhex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");
        let mut s = sig.clone();
        let mut carry = 0u16;
        for i in 0..32 {
            let v = s[32 + i] as u16 + l[i] as u16 + carry;
            s[32 + i] = v as u8;
            carry = v >> 8;
        }
        cases.push((public.clone(), s));
        // A small-order R or key.
        let so = &small_order[round % small_order.len()];
        let mut s = sig.clone();
        s[..32].copy_from_slice(so);
        cases.push((public.clone(), s));
        cases.push((so.clone(), sig.clone()));
        for (p, s) in cases {
            assert_eq!(
                Ed25519.verify(&p, &msg, &s).is_ok(),
                dalek_verify_strict(&p, &msg, &s),
                "round {round}"
            );
        }
    }
}

#[test]
fn ecdsa_generation_redraws_out_of_range_scalars() {
    let mut valid = [0u8; 32];
    valid[31] = 9;
    let rng = ScriptedRng::new(vec![[0u8; 32], [0xff; 32], valid]);
    let key = EcdsaP256.generate(&rng).unwrap();
    assert_eq!(key.private_bytes().as_bytes(), &valid[..]);
    let stuck = ScriptedRng::new(vec![[0xff; 32]]);
    assert_eq!(
        EcdsaP256.generate(&stuck).err(),
        Some(CryptoError::RandomFailed)
    );
    let n = unhex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    assert_eq!(EcdsaP256.load(&n).err(), Some(CryptoError::InvalidKey));
    assert_eq!(
        EcdsaP256.load(&[0u8; 32]).err(),
        Some(CryptoError::InvalidKey)
    );
}

#[test]
fn ecdsa_only_uncompressed_points() {
    let key = EcdsaP256.generate(PROVIDER.random).unwrap();
    let public = key.public_key();
    let sig = key.sign(b"m", PROVIDER.random).unwrap();
    EcdsaP256.verify(&public, b"m", &sig).unwrap();
    let mut compressed = public[..33].to_vec();
    compressed[0] = 0x02 | (public[64] & 1);
    assert_eq!(
        EcdsaP256.verify(&compressed, b"m", &sig),
        Err(CryptoError::BadSignature)
    );
    let mut hybrid = public.clone();
    hybrid[0] = 0x06 | (public[64] & 1);
    assert_eq!(
        EcdsaP256.verify(&hybrid, b"m", &sig),
        Err(CryptoError::BadSignature)
    );
    // r = 0 or s = 0.
    let mut zero_r = sig.clone();
    zero_r[..32].fill(0);
    assert_eq!(
        EcdsaP256.verify(&public, b"m", &zero_r),
        Err(CryptoError::BadSignature)
    );
    let mut zero_s = sig;
    zero_s[32..].fill(0);
    assert_eq!(
        EcdsaP256.verify(&public, b"m", &zero_s),
        Err(CryptoError::BadSignature)
    );
}

/// Wycheproof ECDSA P-256/SHA-256 with r||s signatures (the DER-encoded public keys of the
/// groups are not used: the uncompressed point is).
#[test]
fn ecdsa_wycheproof_p1363() {
    let Some(file) = wycheproof("ecdsa_secp256r1_sha256_p1363_test.json") else {
        return;
    };
    let mut count = 0;
    for (g, t) in wycheproof_tests(&file) {
        let public = unhex(g["publicKey"]["uncompressed"].as_str().unwrap());
        let msg = unhex(t["msg"].as_str().unwrap());
        let sig = unhex(t["sig"].as_str().unwrap());
        let ours = EcdsaP256.verify(&public, &msg, &sig).is_ok();
        match t["result"].as_str().unwrap() {
            "valid" => assert!(ours, "tc {}", t["tcId"]),
            "invalid" => assert!(!ours, "tc {}", t["tcId"]),
            _ => {}
        }
        count += 1;
    }
    assert!(count > 100);
}

#[test]
fn mldsa_signatures_are_hedged() {
    let key = MlDsa65.generate(&TestRng::new(5)).unwrap();
    let a = key.sign(b"m", &TestRng::new(6)).unwrap();
    let b = key.sign(b"m", &TestRng::new(6)).unwrap();
    // aws-lc draws the randomness itself: the same `rng` does not give the same signature.
    assert_ne!(a, b);
    MlDsa65.verify(&key.public_key(), b"m", &a).unwrap();
    MlDsa65.verify(&key.public_key(), b"m", &b).unwrap();
}
