//! Exponential backoff with jitter drawn from the provider's random source.

use iotseal_proto::crypto::SecureRandom;

/// Consecutive failures and the delay they call for.
///
/// The `k`-th consecutive failure (from 0) waits a delay in `[c/2, c]` with
/// `c = min(base × 2^k, max)` ("equal jitter": a spread that still grows, so devices that
/// failed together do not retry together, and the wait never collapses to nothing).
#[derive(Debug)]
pub(crate) struct Backoff {
    base_ms: u64,
    max_ms: u64,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(base_ms: u64, max_ms: u64) -> Self {
        Self {
            base_ms,
            max_ms,
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// The ceiling of the next delay.
    pub(crate) fn ceiling_ms(&self) -> u64 {
        self.base_ms
            .saturating_mul(1u64 << self.failures.min(32))
            .min(self.max_ms)
    }

    /// Counts a failure that is retried at once (no delay).
    pub(crate) fn count(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// Counts a failure and returns how long to wait, ms (at least 1). Without randomness
    /// (the source failed) the delay is the ceiling.
    pub(crate) fn next_delay(&mut self, rng: &dyn SecureRandom) -> u64 {
        let ceiling = self.ceiling_ms().max(1);
        self.count();
        let half = ceiling / 2;
        let mut b = [0u8; 8];
        let r = match rng.fill(&mut b) {
            Ok(()) => u64::from_le_bytes(b),
            Err(_) => u64::MAX,
        };
        let spread = ceiling - half;
        // `spread` is at most 2^63, so `spread + 1` does not overflow.
        let jitter = r % (spread + 1);
        (half + jitter).max(1)
    }

    /// Progress: the next failure starts from the base delay again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotseal_proto::crypto::CryptoError;

    #[derive(Debug)]
    struct Fixed(u8);
    impl SecureRandom for Fixed {
        fn fill(&self, d: &mut [u8]) -> Result<(), CryptoError> {
            d.fill(self.0);
            Ok(())
        }
    }
    #[derive(Debug)]
    struct Broken;
    impl SecureRandom for Broken {
        fn fill(&self, _: &mut [u8]) -> Result<(), CryptoError> {
            Err(CryptoError::RandomFailed)
        }
    }

    #[test]
    fn delays_stay_within_half_and_full_ceiling() {
        for byte in [0u8, 1, 0x7f, 0xff] {
            let mut b = Backoff::new(50, 1000);
            let mut ceilings = alloc::vec::Vec::new();
            for _ in 0..8 {
                let c = b.ceiling_ms();
                let d = b.next_delay(&Fixed(byte));
                assert!(d >= c / 2 && d <= c, "{d} outside [{}, {c}]", c / 2);
                ceilings.push(c);
            }
            assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
            b.reset();
            assert_eq!(b.ceiling_ms(), 50);
        }
        let mut b = Backoff::new(1, 1);
        assert_eq!(b.next_delay(&Broken), 1);
        let mut b = Backoff::new(u64::MAX, u64::MAX);
        assert!(b.next_delay(&Fixed(3)) >= u64::MAX / 2);
    }
}
