//! A no_std device firmware stand-in: builds a device configuration and starts a handshake
//! with the RustCrypto provider and a caller-supplied random source.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::panic::PanicInfo;

use iotseal_proto::crypto::{CryptoError, SecureRandom};
use iotseal_proto::handshake::{DeviceConfig, DeviceHandshake, PinnedKey};
use iotseal_proto::{SigAlg, Time};

#[global_allocator]
static HEAP: linked_list_allocator::LockedHeap = linked_list_allocator::LockedHeap::empty();

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {}
}

/// A hardware RNG stand-in.
#[derive(Debug)]
struct BoardRng;

impl SecureRandom for BoardRng {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        dest.fill(0x42);
        Ok(())
    }
}

static RNG: BoardRng = BoardRng;

/// Starts a handshake; returns the hello's length (0 on error).

pub fn iotseal_start(now_ms: u64) -> usize {
    let p = iotseal_crypto_rustcrypto::provider(&RNG);
    let Ok(sig) = p.signature(SigAlg::Ed25519) else { return 0 };
    let Ok(key) = sig.generate(&RNG) else { return 0 };
    let pins: Vec<PinnedKey> = alloc::vec![PinnedKey { alg: SigAlg::Ed25519, public_key: key.public_key() }];
    let cfg = DeviceConfig::new(p, alloc::vec![1, 2, 3], key, pins);
    match DeviceHandshake::start(Arc::new(cfg), Time(now_ms)) {
        Ok((_, hello)) => hello.len(),
        Err(_) => 0,
    }
}
