//! The key schedule: HKDF-SHA256 shaped as TLS 1.3's (RFC 8446 §7.1), with its own label
//! prefix so no key can be confused with a TLS key.
//!
//! ```text
//! early      = HKDF-Extract(salt = 0^32, IKM = 0^32)
//! hs_secret  = HKDF-Extract(salt = Derive-Secret(early, "derived", H("")), IKM = shared)
//! d_hs, g_hs = Derive-Secret(hs_secret, "d hs" / "g hs", TH_hello)
//! finished_x = Expand-Label(x_hs, "finished", "", 32)
//! master     = HKDF-Extract(salt = Derive-Secret(hs_secret, "derived", H("")), IKM = 0^32)
//! d_app,g_app= Derive-Secret(master, "d app" / "g app", TH_full)
//! key, iv    = Expand-Label(secret, "key", "", key_len), Expand-Label(secret, "iv", "", 12)
//! next       = Expand-Label(secret, "update", "", 32)
//! ```
//! `Expand-Label(S, L, C, n) = HKDF-Expand(S, be16(n) || u8(len) || "iotseal v1 " || L ||
//! u8(len(C)) || C, n)` and `Derive-Secret(S, L, C) = Expand-Label(S, L, C, 32)`.

use crate::crypto::{CryptoError, CryptoProvider, HASH_LEN, NONCE_LEN, RecordKey, Secret};
use crate::suite::AeadId;
use alloc::boxed::Box;

/// The prefix of every Expand-Label label.
pub const LABEL_PREFIX: &[u8] = b"iotseal v1 ";

/// HKDF-Expand-Label.
pub fn expand_label(
    p: &CryptoProvider,
    secret: &[u8],
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    if out.len() > 0xffff || LABEL_PREFIX.len() + label.len() > 255 || context.len() > 255 {
        return Err(CryptoError::InvalidLength);
    }
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(LABEL_PREFIX.len() + label.len()) as u8];
    let ctx_len = [context.len() as u8];
    p.hkdf.expand(
        secret,
        &[&len, &label_len, LABEL_PREFIX, label, &ctx_len, context],
        out,
    )
}

/// Derive-Secret: a 32-byte secret.
pub fn derive_secret(
    p: &CryptoProvider,
    secret: &[u8],
    label: &[u8],
    context: &[u8],
) -> Result<Secret, CryptoError> {
    let mut out = alloc::vec![0u8; HASH_LEN];
    expand_label(p, secret, label, context, &mut out)?;
    Ok(Secret::new(out))
}

/// Secrets of one handshake, from the shared secret on.
#[derive(Debug)]
pub struct HandshakeSecrets {
    /// Device-to-gateway handshake traffic secret.
    pub device: Secret,
    /// Gateway-to-device handshake traffic secret.
    pub gateway: Secret,
    /// The master secret (application secrets come from it and the full transcript).
    pub master: Secret,
}

impl HandshakeSecrets {
    /// Runs the schedule from the KEM's shared secret and the hash of the transcript through
    /// the gateway's key share.
    pub fn new(p: &CryptoProvider, shared: &[u8], th_hello: &[u8]) -> Result<Self, CryptoError> {
        let zeros = [0u8; HASH_LEN];
        let empty_hash = p.hash.hash(b"");
        let early = p.hkdf.extract(&zeros, &zeros);
        let salt = derive_secret(p, early.as_bytes(), b"derived", &empty_hash)?;
        let hs = p.hkdf.extract(salt.as_bytes(), shared);
        let device = derive_secret(p, hs.as_bytes(), b"d hs", th_hello)?;
        let gateway = derive_secret(p, hs.as_bytes(), b"g hs", th_hello)?;
        let salt = derive_secret(p, hs.as_bytes(), b"derived", &empty_hash)?;
        let master = p.hkdf.extract(salt.as_bytes(), &zeros);
        Ok(Self {
            device,
            gateway,
            master,
        })
    }

    /// Application traffic secrets `(device, gateway)` from the full transcript hash.
    pub fn application(
        &self,
        p: &CryptoProvider,
        th_full: &[u8],
    ) -> Result<(Secret, Secret), CryptoError> {
        Ok((
            derive_secret(p, self.master.as_bytes(), b"d app", th_full)?,
            derive_secret(p, self.master.as_bytes(), b"g app", th_full)?,
        ))
    }
}

/// The Finished key of a traffic secret.
pub fn finished_key(p: &CryptoProvider, secret: &Secret) -> Result<Secret, CryptoError> {
    derive_secret(p, secret.as_bytes(), b"finished", b"")
}

/// The next epoch's secret; the caller drops the old one.
pub fn next_secret(p: &CryptoProvider, secret: &Secret) -> Result<Secret, CryptoError> {
    derive_secret(p, secret.as_bytes(), b"update", b"")
}

/// A record key and IV derived from a traffic secret.
#[derive(Debug)]
pub struct TrafficKeys {
    /// The AEAD key.
    pub key: Box<dyn RecordKey>,
    /// The static IV, XORed with the sequence number to form each nonce.
    pub iv: [u8; NONCE_LEN],
}

impl TrafficKeys {
    /// Derives key and IV for `aead` from `secret`.
    pub fn new(p: &CryptoProvider, aead: AeadId, secret: &Secret) -> Result<Self, CryptoError> {
        let mut key = zeroize::Zeroizing::new(alloc::vec![0u8; aead.key_len()]);
        expand_label(p, secret.as_bytes(), b"key", b"", &mut key)?;
        let mut iv = [0u8; NONCE_LEN];
        expand_label(p, secret.as_bytes(), b"iv", b"", &mut iv)?;
        Ok(Self {
            key: p.aead(aead)?.key(&key)?,
            iv,
        })
    }

    /// The nonce for sequence number `seq`: the IV XOR the big-endian sequence number.
    pub fn nonce(&self, seq: u64) -> [u8; NONCE_LEN] {
        let mut n = self.iv;
        for (b, s) in n[NONCE_LEN - 8..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

impl Drop for TrafficKeys {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.iv);
    }
}
