//! Randomness: the bridge from the protocol's [`SecureRandom`] to rand_core 0.10, and (with
//! the `std` feature) [`OsRandom`], the operating system's generator.

use core::fmt;

use iotseal_proto::crypto::{CryptoError, SecureRandom};
use rand_core::{TryCryptoRng, TryRng};
use zeroize::Zeroizing;

/// The operating system's random generator, through the `getrandom` crate.
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug, Default)]
pub struct OsRandom;

#[cfg(feature = "std")]
impl SecureRandom for OsRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        getrandom::fill(dest).map_err(|_| CryptoError::RandomFailed)
    }
}

/// `N` bytes from `rng`, wiped on drop.
pub(crate) fn random_array<const N: usize>(
    rng: &dyn SecureRandom,
) -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; N]);
    rng.fill(out.as_mut())?;
    Ok(out)
}

/// A [`SecureRandom`] seen as a rand_core 0.10 [`TryCryptoRng`], for the backend APIs that
/// draw their own randomness (hedged ECDSA and ML-DSA signing). Remembers whether the source
/// failed, since the backends fold that into their own opaque error.
pub(crate) struct RngAdapter<'a> {
    inner: &'a dyn SecureRandom,
    failed: bool,
}

impl<'a> RngAdapter<'a> {
    pub(crate) fn new(inner: &'a dyn SecureRandom) -> Self {
        Self {
            inner,
            failed: false,
        }
    }

    /// Whether a fill failed.
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }
}

/// The random source failed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RngError;

impl fmt::Display for RngError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("random source failed")
    }
}

impl core::error::Error for RngError {}

impl TryRng for RngAdapter<'_> {
    type Error = RngError;

    fn try_next_u32(&mut self) -> Result<u32, RngError> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, RngError> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        self.inner.fill(dst).map_err(|_| {
            self.failed = true;
            RngError
        })
    }
}

impl TryCryptoRng for RngAdapter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{FailingRng, TestRng};

    #[test]
    fn adapter_reads_the_source_in_order() {
        let a = TestRng::new(b"adapter");
        let b = TestRng::new(b"adapter");
        let mut ad = RngAdapter::new(&a);
        let mut x = [0u8; 40];
        ad.try_fill_bytes(&mut x).unwrap();
        let mut y = [0u8; 40];
        b.fill(&mut y).unwrap();
        assert_eq!(x, y);
        assert!(!ad.failed());
    }

    #[test]
    fn adapter_reports_failure() {
        let mut ad = RngAdapter::new(&FailingRng);
        assert!(ad.try_next_u32().is_err());
        assert!(ad.failed());
    }

    #[cfg(feature = "std")]
    #[test]
    fn os_random_fills() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        OsRandom.fill(&mut a).unwrap();
        OsRandom.fill(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
