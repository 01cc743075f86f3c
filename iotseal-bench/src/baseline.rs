//! A no-encryption baseline for the record layer, to isolate the protocol's own cost
//! (header, nonce, window, copies) from the cipher's (idea: quinn's `perf/src/noprotection.rs`).
//!
//! **Insecure by design.** [`InsecureNoEncryption`] leaves the plaintext as it is and returns
//! an all-zero tag. It exists only in this benchmark crate, which the gateway and the device
//! SDK do not depend on; the only way to use it is [`insecure_no_encryption_provider`], whose
//! provider is named [`BASELINE_PROVIDER_NAME`] so it cannot be mistaken for a real one.

use iotseal_proto::crypto::{CryptoError, NONCE_LEN, RecordKey, RecordProtection, TAG_LEN};
use iotseal_proto::{AeadId, CryptoProvider};

/// Name of the baseline in tables and JSON (in place of an AEAD name).
pub const BASELINE_AEAD_NAME: &str = "none (baseline)";

/// Name of the provider built by [`insecure_no_encryption_provider`].
pub const BASELINE_PROVIDER_NAME: &str = "INSECURE-no-encryption";

/// Record "protection" that copies nothing, encrypts nothing and authenticates nothing: the
/// ciphertext is the plaintext, the tag is 16 zero bytes. It answers to the [`AeadId`] it
/// stands in for, because sessions look record protection up by the suite's id.
#[derive(Debug)]
pub struct InsecureNoEncryption(AeadId);

#[derive(Debug)]
struct InsecureNoKey;

impl RecordProtection for InsecureNoEncryption {
    fn id(&self) -> AeadId {
        self.0
    }

    fn key(&self, key: &[u8]) -> Result<Box<dyn RecordKey>, CryptoError> {
        if key.len() != self.0.key_len() {
            return Err(CryptoError::InvalidLength);
        }
        Ok(Box::new(InsecureNoKey))
    }
}

impl RecordKey for InsecureNoKey {
    fn seal(
        &self,
        _nonce: &[u8; NONCE_LEN],
        _aad: &[u8],
        _in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        Ok([0; TAG_LEN])
    }

    fn open(
        &self,
        _nonce: &[u8; NONCE_LEN],
        _aad: &[u8],
        _in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        // Still a comparison, so a corrupted "tag" is refused as a real one would be.
        if tag.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(CryptoError::DecryptFailed)
        }
    }
}

static NO_ENCRYPTION: [&dyn RecordProtection; 4] = [
    &InsecureNoEncryption(AeadId::Aes128Gcm),
    &InsecureNoEncryption(AeadId::Aes256Gcm),
    &InsecureNoEncryption(AeadId::ChaCha20Poly1305),
    &InsecureNoEncryption(AeadId::Aes256CtrHmacSha256),
];

/// `base` with every record protection algorithm replaced by [`InsecureNoEncryption`]
/// (handshake encryption included). Benchmarks only: it protects nothing.
pub fn insecure_no_encryption_provider(base: CryptoProvider) -> CryptoProvider {
    CryptoProvider {
        name: BASELINE_PROVIDER_NAME,
        aeads: &NO_ENCRYPTION,
        ..base
    }
}
