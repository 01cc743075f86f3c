//! Every primitive of every provider against the Wycheproof vectors (C2SP/wycheproof), through
//! the `CryptoProvider` trait objects only.
//!
//! The vectors live outside the repository (see `iotseal_test::vectors::vectors_dir`). Each
//! test handles one vector file, runs it against every provider of
//! `iotseal_test::providers()`, prints per provider how many cases passed, failed and were
//! skipped (with reasons), and fails on any failed case or when a provider passed none.
//!
//! Run with `cargo test -p iotseal-test --test wycheproof -- --nocapture` to see the counts.

use std::panic::{AssertUnwindSafe, catch_unwind};

use iotseal_proto::crypto::{
    ActiveKeyExchange, CryptoProvider, Kem, NONCE_LEN, Signature, TAG_LEN,
};
use iotseal_proto::suite::{AeadId, KemId, SigAlg};
use iotseal_test::providers;
use iotseal_test::rng::{Drawn, SeededRandom, with_fixed};
use iotseal_test::vectors::{
    Case, Check, Expected, Outcome, Report, expect_eq, finish, load_wycheproof, short_hex, skip,
    vectors_dir,
};

// ---------------------------------------------------------------------------------------------
// Harness

/// Runs `check` on every case of `file` for every provider, then prints and judges the reports.
fn run(file: &str, check: impl Fn(&Case<'_>, &CryptoProvider, &mut Report) -> Check) {
    let Some(dir) = vectors_dir() else { return };
    let vectors = load_wycheproof(&dir, file);
    let cases = vectors.cases();
    let mut reports = Vec::new();
    for provider in providers() {
        let mut report = Report::new(&vectors.name, provider.name);
        for case in &cases {
            let outcome = catch_unwind(AssertUnwindSafe(|| check(case, &provider, &mut report)))
                .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&*panic))));
            report.record(&case.id, outcome);
        }
        reports.push(report);
    }
    finish(&reports);
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".to_owned())
}

fn pass() -> Check {
    Ok(Outcome::Pass)
}

/// `Err` with `what` unless `r` is an error (the input was refused).
fn refused<T>(r: Result<T, impl std::fmt::Debug>, what: &str) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!("{what} was accepted, must be refused")),
        Err(_) => Ok(()),
    }
}

fn kem(p: &CryptoProvider, id: KemId) -> Result<Kem, String> {
    p.kem(id).map_err(|e| format!("provider has no {id}: {e}"))
}

fn sig(p: &CryptoProvider, id: SigAlg) -> Result<Signature, String> {
    p.signature(id)
        .map_err(|e| format!("provider has no {id}: {e}"))
}

/// Imports a private key and completes the exchange with `peer`.
fn dh(kem: &Kem, private: &[u8], peer: &[u8]) -> Result<Vec<u8>, String> {
    let kp = kem
        .dangerous_import_ephemeral(private)
        .map_err(|e| format!("import of the private key refused: {e}"))?;
    kp.complete(peer)
        .map(|s| s.as_bytes().to_vec())
        .map_err(|e| format!("complete refused: {e}"))
}

// ---------------------------------------------------------------------------------------------
// AEAD

fn aead_case(c: &Case<'_>, p: &CryptoProvider, id: AeadId) -> Check {
    let (key, iv, aad, msg, ct, tag) = (
        c.hex("key"),
        c.hex("iv"),
        c.hex("aad"),
        c.hex("msg"),
        c.hex("ct"),
        c.hex("tag"),
    );
    if key.len() != id.key_len() {
        return skip(format!(
            "{}-bit key: iotseal's {} takes {}-byte keys",
            key.len() * 8,
            id,
            id.key_len()
        ));
    }
    let Ok(nonce) = <[u8; NONCE_LEN]>::try_from(iv.as_slice()) else {
        return skip("nonce is not 12 bytes: not expressible in iotseal's API");
    };
    let Ok(tag) = <[u8; TAG_LEN]>::try_from(tag.as_slice()) else {
        return skip("tag is not 16 bytes: not expressible in iotseal's API");
    };
    let aead = p
        .aead(id)
        .map_err(|e| format!("provider has no {id}: {e}"))?;
    let k = aead
        .key(&key)
        .map_err(|e| format!("key() refused a {}-byte key: {e}", key.len()))?;
    match c.expected {
        Expected::Valid | Expected::Acceptable => {
            let mut buf = msg.clone();
            let t = k
                .seal(&nonce, &aad, &mut buf)
                .map_err(|e| format!("seal failed: {e}"))?;
            expect_eq("sealed ciphertext", &buf, &ct)?;
            expect_eq("tag", &t, &tag)?;
            let mut buf = ct;
            k.open(&nonce, &aad, &mut buf, &tag)
                .map_err(|e| format!("open refused: {e}"))?;
            expect_eq("opened plaintext", &buf, &msg)?;
        }
        Expected::Invalid => {
            let mut buf = ct;
            refused(
                k.open(&nonce, &aad, &mut buf, &tag),
                "open of a forged record",
            )?;
            if !msg.is_empty() && buf == msg {
                return Err("open failed but left the plaintext in the buffer".into());
            }
        }
    }
    pass()
}

#[test]
fn aes_gcm() {
    run("aes_gcm_test.json", |c, p, _| {
        let id = match c.hex("key").len() {
            16 => AeadId::Aes128Gcm,
            32 => AeadId::Aes256Gcm,
            n => {
                return skip(format!(
                    "AES-{} keys: iotseal has AES-128-GCM and AES-256-GCM only",
                    n * 8
                ));
            }
        };
        aead_case(c, p, id)
    });
}

#[test]
fn chacha20_poly1305() {
    run("chacha20_poly1305_test.json", |c, p, _| {
        aead_case(c, p, AeadId::ChaCha20Poly1305)
    });
}

// ---------------------------------------------------------------------------------------------
// Key exchange

#[test]
fn x25519() {
    run("x25519_test.json", |c, p, _| {
        let kem = kem(p, KemId::X25519)?;
        let (public, private, shared) = (c.hex("public"), c.hex("private"), c.hex("shared"));
        let got = dh(&kem, &private, &public);
        let must_refuse = match c.expected {
            Expected::Invalid => true,
            // iotseal refuses an all-zero shared secret (low-order peer point).
            Expected::Acceptable | Expected::Valid => shared.iter().all(|&b| b == 0),
        };
        if must_refuse {
            refused(
                got,
                "a public key giving an all-zero (or invalid) shared secret",
            )?;
        } else {
            expect_eq("shared secret", &got?, &shared)?;
        }
        pass()
    });
}

/// Wycheproof gives the P-256 scalar as a signed big-endian integer (maybe a leading 00, maybe
/// shorter): the 32-byte big-endian scalar, or `None` if it does not fit.
fn p256_scalar(raw: &[u8]) -> Option<[u8; 32]> {
    let first = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let digits = &raw[first..];
    if digits.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - digits.len()..].copy_from_slice(digits);
    Some(out)
}

#[test]
fn ecdh_p256() {
    const COMPRESSED: &str = "compressed points not accepted by iotseal's wire format";
    run("ecdh_secp256r1_ecpoint_test.json", |c, p, _| {
        let kem = kem(p, KemId::P256)?;
        let (public, shared) = (c.hex("public"), c.hex("shared"));
        let Some(private) = p256_scalar(&c.hex("private")) else {
            return match c.expected {
                Expected::Invalid => pass(),
                _ => Err("private scalar longer than 32 bytes in a valid case".into()),
            };
        };
        let got = dh(&kem, &private, &public);
        let compressed = public.len() == 33 && matches!(public[0], 2 | 3);
        if compressed {
            refused(got, "a compressed point")?;
            return match c.expected {
                Expected::Invalid => pass(),
                _ => skip(COMPRESSED),
            };
        }
        match c.expected {
            Expected::Valid | Expected::Acceptable => expect_eq("shared secret", &got?, &shared)?,
            Expected::Invalid => refused(got, "an invalid public point")?,
        }
        pass()
    });
}

// ---------------------------------------------------------------------------------------------
// Signatures

/// The 65-byte uncompressed point of a Wycheproof ECDSA group.
fn ecdsa_public(c: &Case<'_>) -> Result<Vec<u8>, String> {
    if let Some(hex) = c
        .group
        .pointer("/publicKey/uncompressed")
        .and_then(|v| v.as_str())
    {
        return iotseal_test::vectors::unhex(hex)
            .map_err(|e| format!("publicKey.uncompressed: {e}"));
    }
    // SubjectPublicKeyInfo for P-256 ends with the 65-byte uncompressed point.
    let der = c
        .group_opt_hex("publicKeyDer")
        .or_else(|| c.group_opt_hex("keyDer"));
    match der {
        Some(d) if d.len() >= 65 && d[d.len() - 65] == 4 => Ok(d[d.len() - 65..].to_vec()),
        _ => Err("group has no usable public key".into()),
    }
}

fn expect_verify(
    s: &Signature,
    expected: Expected,
    pk: &[u8],
    msg: &[u8],
    signature: Option<&[u8]>,
) -> Check {
    // `None`: the signature could not even be decoded, which counts as refused.
    let r = match signature {
        Some(sg) => s.verify(pk, msg, sg),
        None => Err(iotseal_proto::crypto::CryptoError::BadSignature),
    };
    match (expected, r) {
        (Expected::Valid, Ok(())) | (Expected::Invalid, Err(_)) => pass(),
        (Expected::Valid, Err(e)) => Err(format!("valid signature refused: {e}")),
        (Expected::Invalid, Ok(())) => Err("invalid signature accepted".into()),
        (Expected::Acceptable, Ok(())) => skip("acceptable case (accepted)"),
        (Expected::Acceptable, Err(_)) => skip("acceptable case (refused)"),
    }
}

#[test]
fn ecdsa_p256_p1363() {
    run("ecdsa_secp256r1_sha256_p1363_test.json", |c, p, _| {
        let s = sig(p, SigAlg::EcdsaP256)?;
        let pk = ecdsa_public(c)?;
        expect_verify(&s, c.expected, &pk, &c.hex("msg"), Some(&c.hex("sig")))
    });
}

#[test]
fn ecdsa_p256_der() {
    run("ecdsa_secp256r1_sha256_test.json", |c, p, _| {
        let s = sig(p, SigAlg::EcdsaP256)?;
        let pk = ecdsa_public(c)?;
        let raw = p256::ecdsa::Signature::from_der(&c.hex("sig"))
            .ok()
            .map(|s| s.to_bytes().to_vec());
        if raw.is_none() && c.expected == Expected::Valid {
            return Err("the test's strict DER decoder refused a valid signature".into());
        }
        expect_verify(&s, c.expected, &pk, &c.hex("msg"), raw.as_deref())
    });
}

#[test]
fn ed25519() {
    run("ed25519_test.json", |c, p, _| {
        let s = sig(p, SigAlg::Ed25519)?;
        let pk = c
            .group
            .pointer("/publicKey/pk")
            .and_then(|v| v.as_str())
            .ok_or("group has no publicKey.pk")?;
        let pk = iotseal_test::vectors::unhex(pk).map_err(|e| e.to_string())?;
        expect_verify(&s, c.expected, &pk, &c.hex("msg"), Some(&c.hex("sig")))
    });
}

// ---------------------------------------------------------------------------------------------
// HKDF, HMAC

#[test]
fn hkdf_sha256() {
    run("hkdf_sha256_test.json", |c, p, _| {
        let (ikm, salt, info, okm) = (c.hex("ikm"), c.hex("salt"), c.hex("info"), c.hex("okm"));
        let size = c.u64("size").ok_or("no size")? as usize;
        let prk = p.hkdf.extract(&salt, &ikm);
        let mut out = vec![0u8; size];
        let r = p.hkdf.expand(prk.as_bytes(), &[&info], &mut out);
        match c.expected {
            Expected::Valid | Expected::Acceptable => {
                r.map_err(|e| format!("expand to {size} bytes refused: {e}"))?;
                expect_eq("okm", &out, &okm)?;
            }
            Expected::Invalid => refused(r, &format!("expand to {size} bytes"))?,
        }
        pass()
    });
}

#[test]
fn hmac_sha256() {
    run("hmac_sha256_test.json", |c, p, _| {
        let (key, msg, tag) = (c.hex("key"), c.hex("msg"), c.hex("tag"));
        let tag_bytes = c.group_u64("tagSize").ok_or("no tagSize")? as usize / 8;
        let full = p.hmac.mac(&key, &[&msg]);
        let ours = &full[..tag_bytes.min(full.len())];
        let matches = tag.len() == tag_bytes && ours == tag.as_slice();
        match (c.expected, matches) {
            (Expected::Invalid, false) | (Expected::Valid | Expected::Acceptable, true) => pass(),
            (Expected::Invalid, true) => Err("a modified tag matches".into()),
            (_, false) => Err(format!(
                "tag differs: got {}, want {}",
                short_hex(ours),
                short_hex(&tag)
            )),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// ML-KEM-768

const KEYGEN_OWN_RNG: &str =
    "ML-KEM keygen from seed: provider keeps its own randomness (the rng argument is not drawn)";
const ENCAPS_OWN_RNG: &str =
    "ML-KEM encapsulation with fixed m: provider keeps its own randomness (valid ek was accepted)";
const KEYGEN_PARTIAL: &str = "keygen from seed not compared: provider keeps its own randomness \
     (only checked that the vector's dk imports and yields its ek)";
const SEED_LEN: &str = "seed length is not 64: not an input of iotseal's API (keygen draws d || z)";

/// Key generation from the FIPS 203 seed `d || z` fed through the rng: `Ok(None)` when the
/// provider keeps its own randomness.
fn keygen_seed(kem: &Kem, seed: &[u8]) -> Result<Option<Box<dyn ActiveKeyExchange>>, String> {
    let (kp, drawn) = with_fixed(seed, |rng| kem.start(rng));
    let kp = kp.map_err(|e| format!("start() with the seed failed: {e}"))?;
    match drawn {
        Drawn::All => Ok(Some(kp)),
        Drawn::Nothing => Ok(None),
        Drawn::Partly(n) => Err(format!("start() drew {n} of the 64 seed bytes")),
    }
}

/// The expanded decapsulation key for `seed`, from any provider that takes injected keygen
/// randomness and whose encapsulation key matches `ek` (so the expansion is vetted by the
/// vector); with the provider's name.
fn dk_from_seed(seed: &[u8], ek: &[u8]) -> Option<(&'static str, Vec<u8>)> {
    providers().into_iter().find_map(|q| {
        let kem = q.kem(KemId::MlKem768).ok()?;
        let kp = keygen_seed(&kem, seed).ok()??;
        if kp.share() != ek {
            return None;
        }
        Some((
            q.name,
            kp.dangerous_private_bytes().ok()?.as_bytes().to_vec(),
        ))
    })
}

#[test]
fn mlkem768_keygen_seed() {
    run("mlkem_768_keygen_seed_test.json", |c, p, r| {
        let kem = kem(p, KemId::MlKem768)?;
        let (seed, ek, dk) = (c.hex("seed"), c.hex("ek"), c.hex("dk"));
        // Deterministic for every provider: the imported dk yields the vector's ek.
        let imported = kem
            .dangerous_import_ephemeral(&dk)
            .map_err(|e| format!("import of dk refused: {e}"))?;
        expect_eq("ek of the imported dk", imported.share(), &ek)?;
        let Some(kp) = keygen_seed(&kem, &seed)? else {
            // Only the deterministic half (the vector's dk parses to its ek) was checked.
            r.note(KEYGEN_PARTIAL);
            return pass();
        };
        expect_eq("ek", kp.share(), &ek)?;
        let got = kp
            .dangerous_private_bytes()
            .map_err(|e| format!("private bytes: {e}"))?;
        expect_eq("dk", got.as_bytes(), &dk)?;
        pass()
    });
}

#[test]
fn mlkem768_encaps() {
    run("mlkem_768_encaps_test.json", |c, p, _| {
        let kem = kem(p, KemId::MlKem768)?;
        let (ek, m) = (c.hex("ek"), c.hex("m"));
        let (r, drawn) = with_fixed(&m, |rng| kem.respond(&ek, rng));
        match c.expected {
            Expected::Invalid => {
                refused(
                    r,
                    &format!("an invalid {}-byte encapsulation key", ek.len()),
                )?;
                pass()
            }
            Expected::Valid | Expected::Acceptable => {
                let resp = r.map_err(|e| format!("respond refused a valid ek: {e}"))?;
                match drawn {
                    Drawn::All => {
                        expect_eq("ciphertext", &resp.share, &c.hex("c"))?;
                        expect_eq("shared secret", resp.secret.as_bytes(), &c.hex("K"))?;
                        pass()
                    }
                    Drawn::Nothing => skip(ENCAPS_OWN_RNG),
                    Drawn::Partly(n) => Err(format!("respond drew {n} of the 32 bytes of m")),
                }
            }
        }
    });
}

#[test]
fn mlkem768_semi_expanded_decaps() {
    run("mlkem_768_semi_expanded_decaps_test.json", |c, p, _| {
        let kem = kem(p, KemId::MlKem768)?;
        let (dk, ek, ct) = (c.hex("dk"), c.hex("ek"), c.hex("c"));
        match c.expected {
            Expected::Valid | Expected::Acceptable => {
                let kp = kem
                    .dangerous_import_ephemeral(&dk)
                    .map_err(|e| format!("import of dk refused: {e}"))?;
                expect_eq("ek of the imported dk", kp.share(), &ek)?;
                let k = kp
                    .complete(&ct)
                    .map_err(|e| format!("decapsulation refused: {e}"))?;
                expect_eq("shared secret", k.as_bytes(), &c.hex("K"))?;
            }
            Expected::Invalid => {
                let r = kem
                    .dangerous_import_ephemeral(&dk)
                    .and_then(|kp| kp.complete(&ct));
                refused(r, &format!("decapsulation ({})", c.comment))?;
            }
        }
        pass()
    });
}

#[test]
fn mlkem768_decaps() {
    run("mlkem_768_test.json", |c, p, r| {
        let kem = kem(p, KemId::MlKem768)?;
        let (seed, ct) = (c.hex("seed"), c.hex("c"));
        if seed.len() != 64 {
            return skip(SEED_LEN);
        }
        let ek = c.opt_hex("ek");
        // The key pair: from the seed where the provider takes injected randomness, else the
        // vector's key expanded by another provider and imported; for a wrong-length
        // ciphertext, which must be refused under any key, a fresh one as a last resort.
        let (kp, known) = match keygen_seed(&kem, &seed)? {
            Some(kp) => (kp, true),
            None => match ek.as_deref().and_then(|ek| dk_from_seed(&seed, ek)) {
                Some((by, dk)) => {
                    r.note(format!(
                        "dk expanded from the seed by the {by} provider (its ek matches the vector), then imported"
                    ));
                    let kp = kem
                        .dangerous_import_ephemeral(&dk)
                        .map_err(|e| format!("import of dk refused: {e}"))?;
                    (kp, true)
                }
                None if c.expected == Expected::Invalid => {
                    r.note("wrong-length ciphertext checked under a fresh key pair");
                    let rng = SeededRandom::new(1);
                    (
                        kem.start(&rng).map_err(|e| format!("start failed: {e}"))?,
                        false,
                    )
                }
                None => return skip(KEYGEN_OWN_RNG),
            },
        };
        if let (true, Some(ek)) = (known, &ek) {
            expect_eq("ek", kp.share(), ek)?;
        }
        let k = kp.complete(&ct);
        match c.expected {
            Expected::Valid | Expected::Acceptable => {
                let k = k.map_err(|e| format!("decapsulation refused: {e}"))?;
                expect_eq("shared secret", k.as_bytes(), &c.hex("K"))?;
            }
            Expected::Invalid => refused(k, &format!("a {}-byte ciphertext", ct.len()))?,
        }
        pass()
    });
}

// ---------------------------------------------------------------------------------------------
// ML-DSA-65

const SIGN_OWN_RNG: &str =
    "exact signature not compared: provider keeps its own ML-DSA signing randomness";

/// Why a case cannot be run through iotseal's API (empty context, message signing only).
fn mldsa_unsupported(c: &Case<'_>) -> Option<String> {
    if let Some(ctx) = c.opt_hex("ctx") {
        if ctx.len() > 255 {
            return Some(
                "context longer than 255 bytes: iotseal's API has no context argument".into(),
            );
        }
        if !ctx.is_empty() {
            return Some(
                "non-empty context: iotseal signs and verifies with the empty context".into(),
            );
        }
    }
    if !c.has("msg") {
        return Some("μ-only (Internal) vector: iotseal has no external-μ interface".into());
    }
    None
}

#[test]
fn mldsa65_sign_seed() {
    run("mldsa_65_sign_seed_test.json", |c, p, r| {
        let s = sig(p, SigAlg::MlDsa65)?;
        let seed = c.group_hex("privateSeed");
        if seed.len() != 32 {
            refused(
                s.load(&seed),
                &format!("a {}-byte private seed", seed.len()),
            )?;
            return if c.expected == Expected::Invalid {
                pass()
            } else {
                Err("valid case with a wrong-length seed".into())
            };
        }
        if let Some(why) = mldsa_unsupported(c) {
            return skip(why);
        }
        let (msg, expected_sig) = (c.hex("msg"), c.hex("sig"));
        let key = s
            .load(&seed)
            .map_err(|e| format!("load of the seed refused: {e}"))?;
        let pk = key.public_key();
        let want_pk = c.group_hex("publicKey");
        expect_eq("public key from the seed", &pk, &want_pk)?;
        if c.expected == Expected::Invalid {
            // No such case in this file besides the context ones; be strict anyway.
            refused(
                s.verify(&pk, &msg, &expected_sig),
                "the invalid case's signature",
            )?;
            return pass();
        }
        s.verify(&pk, &msg, &expected_sig)
            .map_err(|e| format!("expected signature refused: {e}"))?;
        // Hedged signing with rnd (32 zero bytes for the deterministic vectors).
        let rnd = c.opt_hex("rnd").unwrap_or_else(|| vec![0; 32]);
        let (fresh, drawn) = with_fixed(&rnd, |rng| key.sign(&msg, rng));
        let fresh = fresh.map_err(|e| format!("sign with 32 bytes of rnd failed: {e}"))?;
        match drawn {
            Drawn::All => expect_eq("signature (FIPS 204 known answer)", &fresh, &expected_sig)?,
            Drawn::Nothing => r.note(SIGN_OWN_RNG),
            Drawn::Partly(n) => return Err(format!("sign drew {n} of the 32 bytes of rnd")),
        }
        s.verify(&pk, &msg, &fresh)
            .map_err(|e| format!("own fresh signature refused: {e}"))?;
        pass()
    });
}

#[test]
fn mldsa65_sign_noseed() {
    run("mldsa_65_sign_noseed_test.json", |c, p, r| {
        let s = sig(p, SigAlg::MlDsa65)?;
        if c.expected == Expected::Invalid {
            return skip("invalid expanded private key: iotseal loads 32-byte seeds only");
        }
        if let Some(why) = mldsa_unsupported(c) {
            return skip(why);
        }
        let pk = c
            .group_opt_hex("publicKey")
            .ok_or("group has no publicKey")?;
        r.note("signing from an expanded private key not possible (seeds only): the expected signature was verified");
        expect_verify(&s, c.expected, &pk, &c.hex("msg"), Some(&c.hex("sig")))
    });
}

#[test]
fn mldsa65_verify() {
    run("mldsa_65_verify_test.json", |c, p, _| {
        let s = sig(p, SigAlg::MlDsa65)?;
        if let Some(why) = mldsa_unsupported(c) {
            return skip(why);
        }
        let pk = c.group_hex("publicKey");
        expect_verify(&s, c.expected, &pk, &c.hex("msg"), Some(&c.hex("sig")))
    });
}
