//! Deterministic [`SecureRandom`] sources for tests.
//!
//! - [`FixedRandom`] hands out pre-set bytes in order and fails once they run out: it feeds
//!   known-answer inputs (ML-KEM `d || z` and `m`, ML-DSA `rnd`) to a provider that draws its
//!   randomness from the `rng` argument, and [`FixedRandom::remaining`] tells afterwards whether
//!   the provider actually drew them (a provider that keeps its own randomness leaves them).
//! - [`SeededRandom`] is an endless deterministic stream: block `i` is
//!   `SHA-256(seed as u64 little-endian || i as u64 little-endian)`.
//!
//! Neither is secure; both exist only so that tests are reproducible.

use std::sync::Mutex;

use iotseal_proto::crypto::{CryptoError, SecureRandom};
use sha2::{Digest, Sha256};

/// Returns pre-set bytes in order; [`CryptoError::RandomFailed`] when asked for more than is
/// left (nothing is consumed by a failed call).
#[derive(Debug)]
pub struct FixedRandom {
    state: Mutex<FixedState>,
}

#[derive(Debug)]
struct FixedState {
    bytes: Vec<u8>,
    pos: usize,
}

impl FixedRandom {
    /// A source that returns `bytes`, then fails.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            state: Mutex::new(FixedState {
                bytes: bytes.into(),
                pos: 0,
            }),
        }
    }

    /// A source that returns the concatenation of `parts`, in order, then fails.
    pub fn concat(parts: &[&[u8]]) -> Self {
        Self::new(parts.concat())
    }

    /// How many bytes have not been handed out yet.
    pub fn remaining(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.bytes.len() - s.pos
    }

    /// How many bytes were handed out so far.
    pub fn consumed(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).pos
    }

    /// Moves the source to the heap for the rest of the program (for a `&'static` provider field).
    pub fn leak(self) -> &'static Self {
        Box::leak(Box::new(self))
    }
}

impl SecureRandom for FixedRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        let mut s = self.state.lock().map_err(|_| CryptoError::RandomFailed)?;
        let end = s
            .pos
            .checked_add(dest.len())
            .ok_or(CryptoError::RandomFailed)?;
        if end > s.bytes.len() {
            return Err(CryptoError::RandomFailed);
        }
        dest.copy_from_slice(&s.bytes[s.pos..end]);
        s.pos = end;
        Ok(())
    }
}

/// How much of a [`FixedRandom`]'s bytes an operation drew (see [`with_fixed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drawn {
    /// Every byte: the provider took the injected randomness.
    All,
    /// None: the provider keeps its own randomness (or failed before drawing).
    Nothing,
    /// Some but not all: this many bytes.
    Partly(usize),
}

/// Runs `f` with a [`FixedRandom`] holding `bytes`; returns its result and how much it drew.
pub fn with_fixed<T>(bytes: &[u8], f: impl FnOnce(&dyn SecureRandom) -> T) -> (T, Drawn) {
    let rng = FixedRandom::new(bytes);
    let out = f(&rng);
    let drawn = match rng.consumed() {
        n if n == bytes.len() && n > 0 => Drawn::All,
        0 => Drawn::Nothing,
        n => Drawn::Partly(n),
    };
    (out, drawn)
}

/// An endless deterministic stream from a `u64` seed (SHA-256 in counter mode).
#[derive(Debug)]
pub struct SeededRandom {
    seed: u64,
    state: Mutex<SeededState>,
}

#[derive(Debug)]
struct SeededState {
    counter: u64,
    block: [u8; 32],
    /// Bytes of `block` already handed out (32 = none left).
    used: usize,
}

impl SeededRandom {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            state: Mutex::new(SeededState {
                counter: 0,
                block: [0; 32],
                used: 32,
            }),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Moves the source to the heap for the rest of the program (for a `&'static` provider field).
    pub fn leak(self) -> &'static Self {
        Box::leak(Box::new(self))
    }

    fn block(seed: u64, counter: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(counter.to_le_bytes());
        h.finalize().into()
    }
}

impl SecureRandom for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        let mut s = self.state.lock().map_err(|_| CryptoError::RandomFailed)?;
        let mut off = 0;
        while off < dest.len() {
            if s.used == s.block.len() {
                s.block = Self::block(self.seed, s.counter);
                s.counter = s.counter.checked_add(1).ok_or(CryptoError::RandomFailed)?;
                s.used = 0;
            }
            let n = (s.block.len() - s.used).min(dest.len() - off);
            dest[off..off + n].copy_from_slice(&s.block[s.used..s.used + n]);
            s.used += n;
            off += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_hands_out_in_order_then_fails() {
        let r = FixedRandom::concat(&[&[1, 2, 3], &[4, 5]]);
        let mut a = [0u8; 2];
        r.fill(&mut a).unwrap();
        assert_eq!(a, [1, 2]);
        let mut b = [0u8; 4];
        assert_eq!(r.fill(&mut b), Err(CryptoError::RandomFailed));
        assert_eq!(r.remaining(), 3, "a failed call consumes nothing");
        let mut c = [0u8; 3];
        r.fill(&mut c).unwrap();
        assert_eq!(c, [3, 4, 5]);
        assert_eq!(r.remaining(), 0);
        assert_eq!(r.consumed(), 5);
        assert_eq!(r.fill(&mut [0u8; 1]), Err(CryptoError::RandomFailed));
        r.fill(&mut []).unwrap();
    }

    #[test]
    fn seeded_is_deterministic_and_split_independent() {
        let a = SeededRandom::new(7);
        let mut whole = [0u8; 100];
        a.fill(&mut whole).unwrap();

        let b = SeededRandom::new(7);
        let mut parts = [0u8; 100];
        let (x, rest) = parts.split_at_mut(5);
        let (y, z) = rest.split_at_mut(40);
        b.fill(x).unwrap();
        b.fill(y).unwrap();
        b.fill(z).unwrap();
        assert_eq!(whole, parts);

        let expect: [u8; 32] =
            Sha256::digest([7u64.to_le_bytes(), 0u64.to_le_bytes()].concat()).into();
        assert_eq!(whole[..32], expect);

        let c = SeededRandom::new(8);
        let mut other = [0u8; 100];
        c.fill(&mut other).unwrap();
        assert_ne!(whole, other);
    }

    #[test]
    fn with_fixed_reports_what_was_drawn() {
        let ((), d) = with_fixed(&[1, 2], |r| r.fill(&mut [0u8; 2]).unwrap());
        assert_eq!(d, Drawn::All);
        let ((), d) = with_fixed(&[1, 2], |_| ());
        assert_eq!(d, Drawn::Nothing);
        let ((), d) = with_fixed(&[1, 2], |r| r.fill(&mut [0u8; 1]).unwrap());
        assert_eq!(d, Drawn::Partly(1));
    }

    #[test]
    fn leak_gives_static() {
        let r: &'static SeededRandom = SeededRandom::new(1).leak();
        let mut x = [0u8; 8];
        r.fill(&mut x).unwrap();
        let f: &'static FixedRandom = FixedRandom::new(vec![9u8; 4]).leak();
        assert_eq!(f.remaining(), 4);
    }
}
