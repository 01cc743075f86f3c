//! Memory footprint of the device side (docs/footprint.md): heap per handle, per session and
//! per queued reading, counted by a global allocator that counts only the device's calls; the
//! stack high-water mark of a handshake, measured on a thread whose stack this test owns and
//! paints. The gateway is the device engine's in-memory gateway (`iotseal_device_core::loopback`,
//! feature `loopback`), driven by the device-core tests' harness
//! (iotseal-device-core/tests/support), run outside the counted scope or on another thread.
//!
//! `cargo test -p iotseal-c --release --test footprint -- --nocapture` prints the figures;
//! the assertions are the targets of docs/footprint.md, so a regression fails.

#[path = "../../iotseal-device-core/tests/support/mod.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::mpsc;

use iotseal_device_core::{Engine, Event, Response, Sample, Transmit};
use iotseal_proto::reading::SensorKind;
use iotseal_proto::{Suite, Time};
use support::{Outcome, T0};

// ---------------------------------------------------------------------------------------------
// A counting allocator: live and peak bytes of the blocks allocated and freed while the current
// thread is in the counted scope, per thread (tests run in parallel).

struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn count(delta: isize) {
    let live = LIVE.with(|l| {
        l.set(l.get() + delta);
        l.get()
    });
    PEAK.with(|p| p.set(p.get().max(live)));
}

// SAFETY: every call is passed to the system allocator unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, as GlobalAlloc::alloc requires.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            count(-(layout.size() as isize));
        }
        // SAFETY: a block of this allocator with its layout, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` with this thread's allocations counted.
fn counted_scope<R>(f: impl FnOnce() -> R) -> R {
    COUNTED.with(|c| c.set(true));
    let r = f();
    COUNTED.with(|c| c.set(false));
    r
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn reset_peak() {
    PEAK.with(|p| p.set(live()));
}

fn peak() -> isize {
    PEAK.with(Cell::get)
}

// ---------------------------------------------------------------------------------------------

fn classical() -> Suite {
    "x25519/ed25519/chacha20poly1305".parse().unwrap()
}

fn two_values(i: u64) -> Sample {
    Sample {
        values: vec![
            (SensorKind::Temperature, 20.0 + i as f32 / 4.0),
            (SensorKind::Humidity, 40.0),
        ],
        ..Sample::default()
    }
}

/// One request of the device, served by the gateway outside the counted scope.
fn step(h: &mut support::Harness) -> bool {
    let Some(t) = counted_scope(|| h.engine.poll_transmit(h.now)) else {
        return false;
    };
    h.now = h.now.plus_millis(2);
    let o = h.gw.serve(h.now, &t);
    counted_scope(|| {
        drop(t);
        deliver(&mut h.engine, h.now, &o);
        while let Some(e) = h.engine.poll_event() {
            h.events.push(e);
        }
    });
    true
}

fn deliver(engine: &mut Engine, now: Time, o: &Outcome) {
    match o {
        Outcome::Lost => engine.handle_transport_error(now),
        Outcome::Answer(status, body) => engine.handle_response(now, Response::http(*status, body)),
    }
}

struct Heap {
    session: isize,
    handshake_peak: isize,
    per_reading: f64,
    per_reading_sent: f64,
}

/// Heap of one session of `suite` and of queued readings, on the engine's default batching
/// (100 readings per record, 8 records per request).
fn heap(suite: Suite) -> Heap {
    let mut h = support::harness_with(
        7,
        suite,
        |c| {
            c.readings_per_record = 100;
            c.records_per_request = 8;
        },
        |_| {},
    );
    // Warm up: one handshake and one acknowledged batch, so that lazily grown buffers (event
    // queue, ...) are not counted as the session's; then the session is dropped.
    counted_scope(|| h.engine.push(h.now, two_values(0)).unwrap());
    h.engine.connect();
    while step(&mut h) {}
    assert!(
        h.events
            .iter()
            .any(|e| matches!(e, Event::HandshakeComplete { .. }))
    );
    counted_scope(|| h.engine.drop_session());
    h.events.clear();

    // A session, with nothing queued.
    let before = live();
    reset_peak();
    h.engine.connect();
    while step(&mut h) {}
    assert!(h.engine.is_established(), "{:?}", h.events);
    let session = live() - before;
    let handshake_peak = peak() - before;

    // Readings queued (not yet sent).
    let n = 1000u64;
    let before = live();
    counted_scope(|| {
        for i in 0..n {
            h.engine.push(h.now, two_values(i)).unwrap();
        }
    });
    let per_reading = (live() - before) as f64 / n as f64;

    // Readings sealed and in flight (their records remembered until acknowledged).
    let t = counted_scope(|| h.engine.poll_transmit(h.now)).unwrap();
    let in_flight = counted_scope(|| {
        let l = live();
        drop(t);
        l
    });
    let per_reading_sent = (in_flight - before) as f64 / n as f64;
    h.engine.handle_transport_error(h.now);
    Heap {
        session,
        handshake_peak,
        per_reading,
        per_reading_sent,
    }
}

#[test]
fn heap_per_session_and_per_reading() {
    for (name, suite) in [("classical", classical()), ("hybrid", Suite::DEFAULT)] {
        let m = heap(suite);
        eprintln!(
            "heap {name} ({suite}): session {} B, handshake peak {} B, per queued reading {:.1} B, \
             per reading sealed and in flight (request body included) {:.1} B",
            m.session, m.handshake_peak, m.per_reading, m.per_reading_sent
        );
        assert!(m.session <= 6 * 1024, "{name}: {} B per session", m.session);
        assert!(
            m.per_reading <= 192.0,
            "{name}: {} B per reading",
            m.per_reading
        );
    }
}

#[test]
fn heap_of_a_handle() {
    // The C handle from the two files' text: engine, identity key, pins (with the TLS
    // certificate), the boundary's state.
    let p = iotseal_crypto_rustcrypto::default_provider();
    let key = iotseal_device_core::files::IdentityFile::generate(
        &p,
        "sensor-1",
        iotseal_proto::SigAlg::Ed25519,
    )
    .unwrap()
    .to_toml()
    .unwrap();
    let gw = p
        .signature(iotseal_proto::SigAlg::Ed25519)
        .unwrap()
        .generate(p.random)
        .unwrap();
    let pins = format!(
        "url = \"https://127.0.0.1:8443\"\ntls_cert_pem = \"{}\"\ntls_cert_sha256 = \"{}\"\n\
         [[identity]]\nalg = \"ed25519\"\npublic_key = \"{}\"\n",
        "-----BEGIN CERTIFICATE-----\\n".to_string()
            + &"A".repeat(600)
            + "\\n-----END CERTIFICATE-----\\n",
        "00".repeat(32),
        hex::encode(gw.public_key())
    );
    let before = live();
    reset_peak();
    let mut dev = std::ptr::null_mut();
    // SAFETY: valid buffers and lengths; `dev` writable.
    let st = counted_scope(|| unsafe {
        iotseal::iotseal_device_from_buffers(
            pins.as_ptr(),
            pins.len(),
            key.as_ptr(),
            key.len(),
            std::ptr::null(),
            &mut dev,
            std::ptr::null_mut(),
            0,
        )
    });
    assert_eq!(st, iotseal::iotseal_status::IOTSEAL_OK);
    let handle = live() - before;
    let creation_peak = peak() - before;
    // SAFETY: a live handle, freed once.
    counted_scope(|| unsafe { iotseal::iotseal_device_free(dev) });
    eprintln!(
        "heap of a handle: {handle} B (a 600-byte certificate in its pins), {creation_peak} B at \
         the peak of its creation (TOML parsing); {} B left after free",
        live() - before
    );
    assert_eq!(live(), before, "freeing the handle frees everything");
    assert!(handle <= 4 * 1024, "{handle} B per handle");
}

// ---------------------------------------------------------------------------------------------
// Stack: a thread on a stack this test allocates and paints; the deepest byte changed is the
// high-water mark. glibc keeps the thread's descriptor and TLS at the top of that memory, so
// the figure of an empty thread is subtracted.

const STACK: usize = 1 << 20;
const PAINT: u8 = 0xa5;

extern "C" fn trampoline(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `arg` is the Box<Box<dyn FnOnce()>> leaked by `painted`, taken back once.
    let f = unsafe { Box::from_raw(arg.cast::<Box<dyn FnOnce() + Send>>()) };
    f();
    std::ptr::null_mut()
}

/// Runs `f` on a painted stack of its own; returns how many bytes of it were used.
fn painted(f: Box<dyn FnOnce() + Send>) -> usize {
    let layout = Layout::from_size_align(STACK, 1 << 16).unwrap();
    // SAFETY: a non-zero size.
    let stack = unsafe { std::alloc::alloc(layout) };
    assert!(!stack.is_null());
    // SAFETY: `stack` is STACK bytes just allocated.
    unsafe { stack.write_bytes(PAINT, STACK) };
    // SAFETY: zeroed pthread_attr_t is what pthread_attr_init overwrites.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: a pthread_attr_t to initialise.
    assert_eq!(unsafe { libc::pthread_attr_init(&mut attr) }, 0);
    // SAFETY: `stack` is STACK bytes, 64 KiB aligned, alive until after the join.
    let set = unsafe { libc::pthread_attr_setstack(&mut attr, stack.cast(), STACK) };
    assert_eq!(set, 0);
    let arg = Box::into_raw(Box::new(f)).cast::<libc::c_void>();
    // SAFETY: zeroed pthread_t is overwritten by pthread_create.
    let mut thread: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid attribute, an extern "C" start routine and its argument.
    let created = unsafe { libc::pthread_create(&mut thread, &attr, trampoline, arg) };
    assert_eq!(created, 0);
    // SAFETY: the thread just created, joined once.
    let joined = unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
    assert_eq!(joined, 0);
    // SAFETY: initialised above, destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    // SAFETY: the thread has ended; the memory is ours again, STACK bytes.
    let bytes = unsafe { std::slice::from_raw_parts(stack, STACK) };
    let untouched = bytes.iter().take_while(|&&b| b == PAINT).count();
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(stack, layout) };
    STACK - untouched
}

/// The stack used by the device's side of a handshake (and its first records) of `suite`:
/// the engine runs on the painted stack, the gateway on this thread.
fn handshake_stack(suite: Suite) -> usize {
    let h = support::harness_with(11, suite, |_| {}, |_| {});
    let support::Harness {
        mut engine,
        mut gw,
        now,
        ..
    } = h;
    let (to_gw, from_device) = mpsc::channel::<Transmit>();
    let (to_device, from_gw) = mpsc::channel::<Outcome>();
    let server = std::thread::spawn(move || {
        let mut now = now;
        while let Ok(t) = from_device.recv() {
            now = now.plus_millis(2);
            if to_device.send(gw.serve(now, &t)).is_err() {
                break;
            }
        }
    });
    let used = painted(Box::new(move || {
        let mut now = now;
        engine.push(now, two_values(1)).unwrap();
        let mut complete = false;
        for _ in 0..8 {
            let Some(t) = engine.poll_transmit(now) else {
                break;
            };
            to_gw.send(t).unwrap();
            let o = from_gw.recv().unwrap();
            now = now.plus_millis(2);
            deliver(&mut engine, now, &o);
            while let Some(e) = engine.poll_event() {
                complete |= matches!(e, Event::HandshakeComplete { .. });
            }
        }
        assert!(
            complete && engine.pending() == 0,
            "handshake and its reading"
        );
        drop(to_gw);
    }));
    server.join().unwrap();
    used
}

#[test]
fn stack_high_water_mark_of_a_handshake() {
    let empty = painted(Box::new(|| {}));
    for (name, suite) in [("classical", classical()), ("hybrid", Suite::DEFAULT)] {
        let used = handshake_stack(suite);
        eprintln!(
            "stack {name} ({suite}): {used} B used on the thread, {} B over an empty thread \
             ({empty} B: thread descriptor, TLS, start)",
            used - empty
        );
        assert!(used < STACK / 2, "{name}: {used} B of stack");
    }
    let _ = T0;
}
