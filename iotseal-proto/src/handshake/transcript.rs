//! The running transcript hash: each item is absorbed as `be32(len) || bytes`.

use alloc::boxed::Box;

use crate::crypto::{CryptoProvider, HASH_LEN, HashContext};

pub(crate) struct Transcript {
    ctx: Box<dyn HashContext>,
}

impl core::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Transcript")
    }
}

impl Transcript {
    pub(crate) fn new(p: &CryptoProvider) -> Self {
        Self {
            ctx: p.hash.start(),
        }
    }

    pub(crate) fn add(&mut self, item: &[u8]) {
        self.ctx.update(&(item.len() as u32).to_be_bytes());
        self.ctx.update(item);
    }

    pub(crate) fn fork(&self) -> Self {
        Self {
            ctx: self.ctx.fork(),
        }
    }

    pub(crate) fn hash(&self) -> [u8; HASH_LEN] {
        self.ctx.fork_finish()
    }
}

/// `ctx || hash`: what a transcript signature covers.
pub(crate) fn signed_content(ctx: &[u8], th: &[u8; HASH_LEN]) -> alloc::vec::Vec<u8> {
    let mut m = alloc::vec::Vec::with_capacity(ctx.len() + HASH_LEN);
    m.extend_from_slice(ctx);
    m.extend_from_slice(th);
    m
}

/// Finished = HMAC-SHA256(finished_key, TH) truncated to 16 bytes.
pub(crate) fn finished(
    p: &CryptoProvider,
    key: &crate::crypto::Secret,
    th: &[u8; HASH_LEN],
) -> [u8; crate::handshake::messages::FINISHED_LEN] {
    let full = p.hmac.mac(key.as_bytes(), &[th]);
    let mut out = [0u8; crate::handshake::messages::FINISHED_LEN];
    out.copy_from_slice(&full[..crate::handshake::messages::FINISHED_LEN]);
    out
}
