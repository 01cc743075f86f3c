//! Benchmark entry points (cargo feature `bench`, off by default; declared in the header
//! under `#if defined(IOTSEAL_BENCH)`): a gateway in this process that trusts one device
//! (`iotseal_device_core::loopback`: the gateway side of the protocol in memory, for
//! benchmarks and tests; **not a gateway**), and the Rust side of `footprint/bench.c`, the
//! same loop over the engine without the C boundary. docs/performance.md "Devices in C".

use alloc::boxed::Box;
use core::ffi::c_char;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iotseal_device_core::loopback::{self, Gateway};
use iotseal_device_core::{Endpoint, Sample};
use iotseal_proto::reading::SensorKind;
use iotseal_proto::{SigAlg, Time};

use crate::iotseal_status::*;
use crate::{
    Failure, copy_out, create, creation, guard, input, iotseal_device, iotseal_endpoint,
    iotseal_options, iotseal_status, need, provider, put,
};

/// A gateway in this process that knows one device (`iotseal_loopback_new`), for benchmarks
/// and tests: it opens records, counts their readings and acknowledges them; it stores
/// nothing and has no network. Not a gateway to deploy.
pub struct iotseal_loopback {
    gw: Gateway,
}

/// A loopback gateway with a fresh key, and a device handle registered on it and pinning
/// it (Ed25519 identity, the suite of this build: `iotseal_version`). `options` may be NULL.
fn make(
    options: Option<&iotseal_options>,
) -> Result<(Box<iotseal_loopback>, Box<iotseal_device>), Failure> {
    let p = provider::PROVIDER;
    let alg = SigAlg::Ed25519;
    let (mut gw, config) = loopback::pair(p, p, provider::offer(alg), b"loopback".to_vec(), |_| {})
        .map_err(|e| Failure::new(IOTSEAL_ERR_CONFIG, e.to_string()))?;
    gw.keep = false;
    let dev = create(None, config, alg, p, None, options)?;
    Ok((Box::new(iotseal_loopback { gw }), dev))
}

/// Creates a loopback gateway (`*gateway`, free it with `iotseal_loopback_free`) and a device
/// that trusts it (`*device`, free it with `iotseal_device_free`). `options` may be NULL. On
/// failure both are NULL and `error` (if not NULL) holds a message.
///
/// # Safety
/// `options` is NULL or points to an `iotseal_options`; `gateway` and `device` are valid for
/// a write; `error` is NULL or valid for `error_cap` writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iotseal_loopback_new(
    options: *const iotseal_options,
    gateway: *mut *mut iotseal_loopback,
    device: *mut *mut iotseal_device,
    error: *mut c_char,
    error_cap: usize,
) -> iotseal_status {
    if need(gateway, "gateway").is_err() {
        return IOTSEAL_ERR_NULL;
    }
    // SAFETY: checked non-null and aligned; valid for a write (contract).
    unsafe { gateway.write(core::ptr::null_mut()) };
    let mut made = None;
    let build = || {
        // SAFETY: `options` as in the contract.
        let o = unsafe { crate::options(options) }?;
        let (gw, dev) = make(o)?;
        made = Some(gw);
        Ok(dev)
    };
    // SAFETY: `device` and `error` as in the contract.
    let status = unsafe { creation(device, error, error_cap, build) };
    if let Some(gw) = made {
        // SAFETY: checked non-null and aligned above; valid for a write (contract).
        unsafe { gateway.write(Box::into_raw(gw)) };
    }
    status
}

/// Frees a loopback gateway (NULL: nothing).
///
/// # Safety
/// `gateway` is NULL or from `iotseal_loopback_new`, not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iotseal_loopback_free(gateway: *mut iotseal_loopback) {
    if !gateway.is_null() {
        // SAFETY: from Box::into_raw in `iotseal_loopback_new`, freed once (contract).
        let gw = unsafe { Box::from_raw(gateway) };
        let _ = guard(|| {
            drop(gw);
            IOTSEAL_OK
        });
    }
}

/// The gateway's answer to a request (`endpoint`, `body` of `len` bytes) at `now_ms`, as the
/// HTTP binding gives it: `*status` (200, or a refusal's status with its alert) and the body
/// in `buf` (`*answer_len` bytes). `IOTSEAL_ERR_BUFFER_TOO_SMALL` if `cap` is less than
/// `*answer_len` (the answer is then lost: give a buffer of `IOTSEAL_MIN_REQUEST_LEN`).
///
/// # Safety
/// `gateway` is a live loopback gateway used by this thread alone; `body` is valid for `len`
/// reads; `status` and `answer_len` are valid for a write; `buf` for `cap` writes.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn iotseal_loopback_answer(
    gateway: *mut iotseal_loopback,
    now_ms: u64,
    endpoint: iotseal_endpoint,
    body: *const u8,
    len: usize,
    status: *mut u16,
    buf: *mut u8,
    cap: usize,
    answer_len: *mut usize,
) -> iotseal_status {
    guard(|| {
        if gateway.is_null() {
            return IOTSEAL_ERR_NULL;
        }
        // SAFETY: non-null, a live gateway no other thread uses (contract).
        let gw = unsafe { &mut (*gateway).gw };
        let mut run = || -> Result<(), Failure> {
            need(status, "status")?;
            need(answer_len, "answer_len")?;
            // SAFETY: valid for `len` reads (contract).
            let body = unsafe { input(body, len, "body") }?;
            let ep = match endpoint {
                iotseal_endpoint::IOTSEAL_ENDPOINT_HANDSHAKE => Endpoint::Handshake,
                iotseal_endpoint::IOTSEAL_ENDPOINT_RECORDS => Endpoint::Records,
            };
            let (code, answer) = gw.answer(Time(now_ms), ep, body);
            // SAFETY: checked non-null and aligned; valid for a write (contract).
            unsafe { put(status, code, "status") }?;
            // SAFETY: as above.
            unsafe { put(answer_len, answer.len(), "answer_len") }?;
            // SAFETY: `buf` NULL or valid for `cap` writes (contract).
            unsafe { copy_out(&answer, buf, cap, "buf") }
        };
        match run() {
            Ok(()) => IOTSEAL_OK,
            Err(f) => f.status,
        }
    })
}

/// The Rust side of the benchmark (`footprint/bench.c`): on a fresh loopback gateway and
/// device, after a handshake, `rounds` times: push `batch` one-value readings (temperature
/// 21.5), take the request, let the gateway answer (not timed), hand the answer to the engine
/// and drain its events, calling the engine directly (no C boundary). `*seconds`: the time
/// spent in the engine's calls (push, poll_transmit, handle_response, poll_event; `Instant`);
/// `*acknowledged`: the readings acknowledged (`rounds * batch` when all went well).
///
/// # Safety
/// `seconds` and `acknowledged` are valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn iotseal_bench_rust_rate(
    batch: usize,
    rounds: u64,
    seconds: *mut f64,
    acknowledged: *mut u64,
) -> iotseal_status {
    guard(|| {
        let run = || -> Result<(), Failure> {
            need(seconds, "seconds")?;
            need(acknowledged, "acknowledged")?;
            let (spent, acked) = rust_rate(batch, rounds)?;
            // SAFETY: checked non-null and aligned; valid for a write (contract).
            unsafe { put(seconds, spent.as_secs_f64(), "seconds") }?;
            // SAFETY: as above.
            unsafe { put(acknowledged, acked, "acknowledged") }
        };
        match run() {
            Ok(()) => IOTSEAL_OK,
            Err(f) => f.status,
        }
    })
}

fn rust_rate(batch: usize, rounds: u64) -> Result<(Duration, u64), Failure> {
    let (mut lb, mut dev) = make(None)?;
    let now = Time(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    // As `iotseal_push` builds it.
    let sample = || Sample {
        values: alloc::vec![(SensorKind::Temperature, 21.5)],
        ..Sample::default()
    };
    loopback::engine_rate(&mut dev.engine, &mut lb.gw, now, rounds, batch, sample)
        .map_err(|e| Failure::new(IOTSEAL_ERR_CONFIG, e))
}
