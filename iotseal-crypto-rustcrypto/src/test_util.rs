//! Test helpers: deterministic random sources and hex.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use iotseal_proto::crypto::{CryptoError, SecureRandom};
use sha2::Digest;

/// Deterministic generator: block `i` is SHA-256(seed || be64(i)); every `fill` starts a new
/// block, so the output depends only on the seed and the sequence of fill lengths.
#[derive(Debug)]
pub(crate) struct TestRng {
    seed: [u8; 32],
    counter: AtomicU64,
}

impl TestRng {
    pub(crate) fn new(label: &[u8]) -> Self {
        Self {
            seed: sha2::Sha256::digest(label).into(),
            counter: AtomicU64::new(0),
        }
    }
}

impl SecureRandom for TestRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in dest.chunks_mut(32) {
            let i = self.counter.fetch_add(1, Ordering::Relaxed);
            let mut h = sha2::Sha256::new();
            h.update(self.seed);
            h.update(i.to_be_bytes());
            let block: [u8; 32] = h.finalize().into();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}

/// Hands out exactly the given bytes, in order; fails once they run out.
#[derive(Debug)]
pub(crate) struct ReplayRng(Mutex<Vec<u8>>);

impl ReplayRng {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        Self(Mutex::new(bytes.to_vec()))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl SecureRandom for ReplayRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        let mut left = self.0.lock().unwrap();
        if left.len() < dest.len() {
            return Err(CryptoError::RandomFailed);
        }
        dest.copy_from_slice(&left[..dest.len()]);
        left.drain(..dest.len());
        Ok(())
    }
}

/// Always fails.
#[derive(Debug)]
pub(crate) struct FailingRng;

impl SecureRandom for FailingRng {
    fn fill(&self, _dest: &mut [u8]) -> Result<(), CryptoError> {
        Err(CryptoError::RandomFailed)
    }
}

/// Decodes hex, ignoring whitespace.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => panic!("bad hex digit"),
        })
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd hex length");
    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}
