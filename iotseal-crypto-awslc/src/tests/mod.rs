//! Unit tests of the aws-lc provider. Known-answer tests come from the RFCs; the Ed25519
//! strictness and ML-KEM modulus tests also read Wycheproof files when they are on disk.

mod aead;
mod hash;
mod kx;
mod sign;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use iotseal_proto::crypto::{CryptoError, CryptoProvider, SecureRandom};

use crate::{PROVIDER, default_provider};

/// A deterministic test source: block `i` is `SHA-256(seed || be64(i))`.
#[derive(Debug)]
pub(crate) struct TestRng {
    seed: u64,
    counter: AtomicU64,
}

impl TestRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            counter: AtomicU64::new(0),
        }
    }
}

impl SecureRandom for TestRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in dest.chunks_mut(32) {
            let i = self.counter.fetch_add(1, Ordering::Relaxed);
            let mut ctx = digest::Context::new(&digest::SHA256);
            ctx.update(&self.seed.to_be_bytes());
            ctx.update(&i.to_be_bytes());
            let block = ctx.finish();
            chunk.copy_from_slice(&block.as_ref()[..chunk.len()]);
        }
        Ok(())
    }
}

/// A source that returns a fixed sequence of 32-byte blocks, then repeats the last one.
#[derive(Debug)]
pub(crate) struct ScriptedRng {
    blocks: Vec<[u8; 32]>,
    next: AtomicU64,
}

impl ScriptedRng {
    pub(crate) fn new(blocks: Vec<[u8; 32]>) -> Self {
        Self {
            blocks,
            next: AtomicU64::new(0),
        }
    }
}

impl SecureRandom for ScriptedRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in dest.chunks_mut(32) {
            let i = self.next.fetch_add(1, Ordering::Relaxed) as usize;
            let block = &self.blocks[i.min(self.blocks.len() - 1)];
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

pub(crate) fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("test hex")
}

/// A Wycheproof file, or `None` (with a note) when the vectors are not on this machine.
/// `IOTSEAL_VECTORS` overrides the default `/work/shared/vectors`.
pub(crate) fn wycheproof(name: &str) -> Option<serde_json::Value> {
    let dir = std::env::var_os("IOTSEAL_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/vectors"));
    let path = dir.join("wycheproof").join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(serde_json::from_str(&text).expect("wycheproof json")),
        Err(_) => {
            eprintln!("skipping: {} not found", path.display());
            None
        }
    }
}

/// Every test of a Wycheproof file, with its group.
pub(crate) fn wycheproof_tests(
    file: &serde_json::Value,
) -> impl Iterator<Item = (&serde_json::Value, &serde_json::Value)> {
    file["testGroups"]
        .as_array()
        .expect("testGroups")
        .iter()
        .flat_map(|g| {
            g["tests"]
                .as_array()
                .expect("tests")
                .iter()
                .map(move |t| (g, t))
        })
}

#[test]
fn provider_is_complete() {
    assert_eq!(PROVIDER.check(), Ok(()));
    assert_eq!(PROVIDER.name, "aws-lc");
    assert_eq!(default_provider().name, "aws-lc");
    let mut buf = [0u8; 64];
    PROVIDER.random.fill(&mut buf).unwrap();
    assert_ne!(buf, [0u8; 64]);
}

#[test]
fn random_field_can_be_overridden() {
    static RNG: std::sync::LazyLock<TestRng> = std::sync::LazyLock::new(|| TestRng::new(7));
    let p = CryptoProvider {
        random: &*RNG,
        ..PROVIDER
    };
    let a = p.random_vec(40).unwrap();
    let b = TestRng::new(7);
    let mut expected = [0u8; 40];
    b.fill(&mut expected).unwrap();
    assert_eq!(a, expected);
}
