//! SHA-256, HMAC-SHA256 and HKDF-SHA256.

use aws_lc_rs::{digest, hkdf, hmac};
use iotseal_proto::crypto::{CryptoError, HASH_LEN, Hash, HashContext, Hkdf, Hmac, Secret};
use zeroize::Zeroizing;

fn to_array(bytes: &[u8]) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(bytes);
    out
}

/// SHA-256 (`aws_lc_rs::digest`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sha256;

impl Hash for Sha256 {
    fn start(&self) -> Box<dyn HashContext> {
        Box::new(Sha256Context(digest::Context::new(&digest::SHA256)))
    }

    fn hash(&self, data: &[u8]) -> [u8; HASH_LEN] {
        to_array(digest::digest(&digest::SHA256, data).as_ref())
    }
}

struct Sha256Context(digest::Context);

impl HashContext for Sha256Context {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn fork_finish(&self) -> [u8; HASH_LEN] {
        to_array(self.0.clone().finish().as_ref())
    }

    fn fork(&self) -> Box<dyn HashContext> {
        Box::new(Self(self.0.clone()))
    }

    fn finish(self: Box<Self>) -> [u8; HASH_LEN] {
        to_array(self.0.finish().as_ref())
    }
}

/// HMAC-SHA256 (`aws_lc_rs::hmac`), any key length (RFC 2104: longer than 64 bytes is hashed).
#[derive(Debug, Clone, Copy, Default)]
pub struct HmacSha256;

fn hmac_sha256(key: &[u8], data: &[&[u8]]) -> [u8; HASH_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for d in data {
        ctx.update(d);
    }
    to_array(ctx.sign().as_ref())
}

impl Hmac for HmacSha256 {
    fn mac(&self, key: &[u8], data: &[&[u8]]) -> [u8; HASH_LEN] {
        hmac_sha256(key, data)
    }
}

/// HKDF-SHA256 (RFC 5869).
///
/// Extract is computed as `HMAC-SHA256(salt, ikm)` (RFC 5869 §2.2): aws-lc-rs keeps its
/// `Prk` opaque, and the protocol needs the PRK bytes. An empty salt is the same HMAC key as
/// 32 zero bytes (both are zero-padded to the 64-byte block). Expand uses aws-lc's
/// `HKDF_expand`.
///
/// `expand` refuses a PRK shorter than 32 bytes (RFC 5869 §2.3 requires at least HashLen) and
/// an output longer than 255 × 32 bytes, with [`CryptoError::InvalidLength`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HkdfSha256;

/// The largest HKDF-SHA256 output (RFC 5869 §2.3).
const MAX_OKM_LEN: usize = 255 * HASH_LEN;
/// SHA-256's block length: longer HMAC keys are hashed first (RFC 2104 §2).
const BLOCK_LEN: usize = 64;

/// An output length for `aws_lc_rs::hkdf::Prk::expand`.
struct OkmLen(usize);

impl hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl Hkdf for HkdfSha256 {
    fn extract(&self, salt: &[u8], ikm: &[u8]) -> Secret {
        let prk = Zeroizing::new(hmac_sha256(salt, &[ikm]));
        Secret::from_slice(&prk[..])
    }

    fn expand(&self, prk: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<(), CryptoError> {
        if prk.len() < HASH_LEN || out.len() > MAX_OKM_LEN {
            return Err(CryptoError::InvalidLength);
        }
        if out.is_empty() {
            return Ok(());
        }
        // `Prk::new_less_safe` panics on keys longer than 64 bytes; HMAC would hash such a key
        // first anyway (RFC 2104), so hashing it here gives the same result without the panic.
        let hashed;
        let prk = if prk.len() > BLOCK_LEN {
            hashed = digest::digest(&digest::SHA256, prk);
            hashed.as_ref()
        } else {
            prk
        };
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk);
        prk.expand(info, OkmLen(out.len()))
            .and_then(|okm| okm.fill(out))
            .map_err(|_| CryptoError::InvalidLength)
    }
}
