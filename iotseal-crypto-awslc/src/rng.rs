//! The system random source.

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use iotseal_proto::crypto::{CryptoError, SecureRandom};

/// aws-lc's system random generator (`RAND_bytes`: a DRBG seeded from the operating
/// system), as a [`SecureRandom`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLcRandom;

impl SecureRandom for AwsLcRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        SystemRandom::new()
            .fill(dest)
            .map_err(|_| CryptoError::RandomFailed)
    }
}
