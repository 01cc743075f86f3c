//! A no_std device firmware stand-in: builds a device configuration and starts a handshake
//! with the RustCrypto provider and a caller-supplied random source, directly and through
//! the device engine.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::panic::PanicInfo;

use iotseal_device_core::{Engine, EngineConfig, Sample};
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

/// Queues one reading in a device engine and returns the length of the first request (the
/// hello) it gives (0 on error).
pub fn iotseal_engine_start(now_ms: u64) -> usize {
    let p = iotseal_crypto_rustcrypto::provider(&RNG);
    let Ok(sig) = p.signature(SigAlg::Ed25519) else { return 0 };
    let (Ok(key), Ok(gateway)) = (sig.generate(&RNG), sig.generate(&RNG)) else { return 0 };
    let pins: Vec<PinnedKey> = alloc::vec![PinnedKey { alg: SigAlg::Ed25519, public_key: gateway.public_key() }];
    let Ok(mut engine) = Engine::new(EngineConfig::new(alloc::vec![1, 2, 3], key, pins), p) else { return 0 };
    if engine.push(Time(now_ms), Sample::default()).is_err() {
        return 0;
    }
    engine.poll_transmit(Time(now_ms)).map_or(0, |t| t.body.len())
}
