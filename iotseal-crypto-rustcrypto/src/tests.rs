//! Provider-level tests: consistency, the core's hybrids over this provider, determinism.

use alloc::boxed::Box;
use alloc::vec::Vec;

use iotseal_proto::crypto::{CryptoProvider, SecureRandom};
use iotseal_proto::suite::{AeadId, KemId, SigAlg};

use crate::provider;
use crate::test_util::TestRng;

fn seeded(label: &[u8]) -> CryptoProvider {
    let rng: &'static TestRng = Box::leak(Box::new(TestRng::new(label)));
    provider(rng)
}

#[test]
fn provider_is_complete() {
    let p = seeded(b"check");
    assert_eq!(p.check(), Ok(()));
    assert_eq!(p.name, "rustcrypto");
    for &k in KemId::ALL {
        assert_eq!(p.kem(k).unwrap().id(), k);
    }
    for &s in SigAlg::ALL {
        assert_eq!(p.signature(s).unwrap().id(), s);
    }
    for &a in AeadId::ALL {
        assert_eq!(p.aead(a).unwrap().id(), a);
    }
}

#[cfg(feature = "std")]
#[test]
fn default_provider_is_complete() {
    let p = crate::default_provider();
    assert_eq!(p.check(), Ok(()));
    assert_eq!(p.random_vec(16).unwrap().len(), 16);
}

/// Every key exchange (hybrid included) and signature (composite included) through the core,
/// twice with the same seed: identical transcripts; with another seed: different ones.
fn transcript(label: &[u8]) -> Vec<Vec<u8>> {
    let p = seeded(label);
    let rng: &dyn SecureRandom = p.random;
    let mut out = Vec::new();
    for &k in KemId::ALL {
        let kem = p.kem(k).unwrap();
        let device = kem.start(rng).unwrap();
        let gateway = kem.respond(device.share(), rng).unwrap();
        out.push(device.share().to_vec());
        out.push(gateway.share.clone());
        let secret = device.complete(&gateway.share).unwrap();
        assert_eq!(secret, gateway.secret, "{k}");
        out.push(secret.as_bytes().to_vec());
    }
    for &s in SigAlg::ALL {
        let sig = p.signature(s).unwrap();
        let key = sig.generate(rng).unwrap();
        let public = key.public_key();
        let signature = key.sign(b"transcript", rng).unwrap();
        assert_eq!(signature.len(), s.signature_len());
        sig.verify(&public, b"transcript", &signature).unwrap();
        assert!(sig.verify(&public, b"transcripT", &signature).is_err());
        out.push(public);
        out.push(signature);
    }
    out
}

#[test]
fn seeded_provider_is_deterministic() {
    let a = transcript(b"provider det");
    assert_eq!(a, transcript(b"provider det"));
    let b = transcript(b"provider other");
    assert!(a.iter().zip(&b).all(|(x, y)| x != y));
}

#[test]
fn hybrid_export_import() {
    let p = seeded(b"hybrid export");
    let kem = p.kem(KemId::X25519MlKem768).unwrap();
    let device = kem.start(p.random).unwrap();
    let private = device.dangerous_private_bytes().unwrap();
    assert_eq!(private.len(), 2400 + 32);
    let again = kem.dangerous_import_ephemeral(private.as_bytes()).unwrap();
    assert_eq!(again.share(), device.share());
    let gateway = kem.respond(device.share(), p.random).unwrap();
    assert_eq!(again.complete(&gateway.share).unwrap(), gateway.secret);
}
