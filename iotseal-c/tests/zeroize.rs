//! The identity key does not outlive the handle in freed memory: an allocator that looks into
//! every block freed while a handle is created from the files' text, used (a handshake's first
//! message) and freed, for the private key's bytes and for their hex text (as in the key file).
//! A block that still holds either when it is freed was not wiped. (Only the heap: copies on
//! the stack are not seen.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use iotseal::iotseal_status::*;
use iotseal::*;

struct Inspecting;

/// The secrets looked for (fixed arrays: the allocator must not allocate).
static SEED: Mutex<[u8; 32]> = Mutex::new([0; 32]);
static SEED_HEX: Mutex<[u8; 64]> = Mutex::new([0; 64]);
static ARMED: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicUsize = AtomicUsize::new(0);
static INSPECTED: AtomicUsize = AtomicUsize::new(0);

fn contains(block: &[u8], needle: &[u8]) -> bool {
    block.len() >= needle.len() && block.windows(needle.len()).any(|w| w == needle)
}

// SAFETY: every call is passed to the system allocator unchanged; freed blocks are read before.
unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && ARMED.load(Ordering::Relaxed) {
            // Blocks handed out while armed start zeroed, so what an earlier free (before the
            // test armed, e.g. the key file's text being written) left in reused memory is
            // not taken for the library's.
            // SAFETY: `p` is a fresh block of `layout.size()` bytes.
            unsafe { p.write_bytes(0, layout.size()) };
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed) {
            // SAFETY: the block being freed: `layout.size()` bytes, still ours until below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            INSPECTED.fetch_add(1, Ordering::Relaxed);
            let seed = *SEED.lock().unwrap_or_else(|e| e.into_inner());
            let hex = *SEED_HEX.lock().unwrap_or_else(|e| e.into_inner());
            if contains(block, &seed) || contains(block, &hex) {
                FOUND.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: a block of this allocator with its layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Inspecting = Inspecting;

#[test]
fn freed_memory_holds_no_identity_key() {
    let p = iotseal_crypto_rustcrypto::default_provider();
    let ident = iotseal_device_core::files::IdentityFile::generate(
        &p,
        "wipe-1",
        iotseal_proto::SigAlg::Ed25519,
    )
    .unwrap();
    let key_text = ident.to_toml().unwrap();
    let seed = hex::decode(ident.private_key.as_str()).unwrap();
    SEED.lock().unwrap().copy_from_slice(&seed);
    SEED_HEX
        .lock()
        .unwrap()
        .copy_from_slice(ident.private_key.as_bytes());
    let gw = p
        .signature(iotseal_proto::SigAlg::Ed25519)
        .unwrap()
        .generate(p.random)
        .unwrap();
    let pins = format!(
        "url = \"https://127.0.0.1:8443\"\ntls_cert_pem = \"\"\ntls_cert_sha256 = \"{}\"\n\
         [[identity]]\nalg = \"ed25519\"\npublic_key = \"{}\"\n",
        "00".repeat(32),
        hex::encode(gw.public_key())
    );

    ARMED.store(true, Ordering::SeqCst);
    let mut dev = std::ptr::null_mut();
    // SAFETY: valid buffers and lengths; `dev` writable.
    let st = unsafe {
        iotseal_device_from_buffers(
            pins.as_ptr(),
            pins.len(),
            key_text.as_ptr(),
            key_text.len(),
            std::ptr::null(),
            &mut dev,
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(st, IOTSEAL_OK);
    let kinds = [IOTSEAL_SENSOR_TEMPERATURE];
    let values = [21.0f32];
    // SAFETY: a live handle; arrays of 1.
    let st = unsafe {
        iotseal_push(
            dev,
            1_767_225_600_000,
            kinds.as_ptr(),
            values.as_ptr(),
            1,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, IOTSEAL_OK);
    let mut buf = vec![0u8; 1 << 16];
    let mut ep = iotseal_endpoint::IOTSEAL_ENDPOINT_RECORDS;
    let mut len = 0;
    // SAFETY: a live handle; `buf` has its length; writable outputs.
    let st = unsafe {
        iotseal_poll_transmit(
            dev,
            1_767_225_600_000,
            &mut ep,
            buf.as_mut_ptr(),
            buf.len(),
            &mut len,
        )
    };
    assert_eq!(st, IOTSEAL_OK);
    // SAFETY: a live handle, freed once.
    unsafe { iotseal_device_free(dev) };
    ARMED.store(false, Ordering::SeqCst);

    assert!(
        INSPECTED.load(Ordering::SeqCst) > 10,
        "blocks were inspected"
    );
    assert_eq!(
        FOUND.load(Ordering::SeqCst),
        0,
        "freed blocks still held the identity key (bytes or hex)"
    );
    drop(key_text);
}
