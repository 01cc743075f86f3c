//! A deterministic random source that each fuzz iteration resets, so one input always takes
//! the same path (session ids, nonces, ephemeral keys). NOT random: fuzzing only.

use std::sync::atomic::{AtomicU64, Ordering};

use iotseal_proto::crypto::{CryptoError, SecureRandom};

const SEED: u64 = 0x1075_ea1f_0dd5_eed5;

/// SplitMix64 over an atomic counter.
#[derive(Debug)]
pub struct ResettableRandom {
    state: AtomicU64,
}

impl ResettableRandom {
    /// A stream at the start (each instance is its own stream).
    pub const fn new() -> Self {
        Self {
            state: AtomicU64::new(SEED),
        }
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl SecureRandom for ResettableRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

impl Default for ResettableRandom {
    fn default() -> Self {
        Self::new()
    }
}

/// The one instance every fuzzing provider uses.
pub static RNG: ResettableRandom = ResettableRandom::new();

impl ResettableRandom {
    /// Starts this stream over.
    pub fn reset(&self) {
        self.state.store(SEED, Ordering::Relaxed);
    }
}

/// Starts [`RNG`] over: call at the start of every iteration.
pub fn reset() {
    RNG.reset();
}
