//! Test support: the in-memory gateway (`iotseal_device_core::loopback`, with its fault
//! injection), seeded randomness and a driver loop on virtual time.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::collections::HashSet;
use std::sync::Mutex;

pub use iotseal_device_core::loopback::{Binding, Gateway, Outcome, status_for};
use iotseal_device_core::{Engine, EngineConfig, Event, MsgId, Sample, Transmit, loopback};
use iotseal_proto::crypto::{CryptoError, CryptoProvider, SecureRandom};
use iotseal_proto::handshake::GatewayConfig;
use iotseal_proto::reading::SensorKind;
use iotseal_proto::{Suite, Time};

/// 2026-01-01T00:00:00Z.
pub const T0: Time = Time(1_767_225_600_000);

/// The fast suite most tests use.
pub fn fast_suite() -> Suite {
    "x25519/ed25519/aes256gcm".parse().unwrap()
}

/// A deterministic random source (splitmix64; no security, tests only).
#[derive(Debug)]
pub struct SeededRandom(Mutex<u64>);

impl SecureRandom for SeededRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        let mut s = self.0.lock().unwrap();
        for chunk in dest.chunks_mut(8) {
            *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

/// The RustCrypto provider with a seeded random source.
pub fn provider(seed: u64) -> CryptoProvider {
    let rng: &'static SeededRandom = Box::leak(Box::new(SeededRandom(Mutex::new(seed))));
    iotseal_crypto_rustcrypto::provider(rng)
}

/// A device engine and a gateway that trust each other.
pub struct Harness {
    pub engine: Engine,
    pub gw: Gateway,
    /// The device driver's clock.
    pub now: Time,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Every request the engine gave, in order (lost ones included).
    pub sent: Vec<Transmit>,
    /// Message ids pushed.
    pub pushed: Vec<MsgId>,
}

pub fn harness(
    seed: u64,
    tweak: impl FnOnce(&mut EngineConfig),
    gateway: impl FnOnce(&mut GatewayConfig),
) -> Harness {
    harness_with(seed, fast_suite(), tweak, gateway)
}

pub fn harness_with(
    seed: u64,
    suite: Suite,
    tweak: impl FnOnce(&mut EngineConfig),
    gateway: impl FnOnce(&mut GatewayConfig),
) -> Harness {
    let dp = provider(seed);
    let gp = provider(seed ^ 0x6a7e_5eed);
    let device_id = format!("dev-{seed}").into_bytes();
    let (gw, mut cfg) = loopback::pair(gp, dp, suite, device_id, gateway).unwrap();
    cfg.readings_per_record = 10;
    cfg.records_per_request = 4;
    tweak(&mut cfg);
    let engine = Engine::new(cfg, dp).unwrap();
    Harness {
        engine,
        gw,
        now: T0,
        events: Vec::new(),
        sent: Vec::new(),
        pushed: Vec::new(),
    }
}

/// Reading number `i` (values tell readings apart).
pub fn sample(i: u64) -> Sample {
    Sample {
        time: None,
        values: vec![(SensorKind::Temperature, 20.0 + i as f32 / 8.0)],
        extra: i.to_be_bytes().to_vec(),
    }
}

impl Harness {
    /// The clock correction of the first completed handshake that adopted one.
    pub fn clock_adjusted(&self) -> Option<i64> {
        self.events.iter().find_map(|e| match e {
            Event::HandshakeComplete {
                clock_adjusted_ms, ..
            } => *clock_adjusted_ms,
            _ => None,
        })
    }

    /// Pushes `n` readings.
    pub fn push(&mut self, n: u64) {
        for i in 0..n {
            let id = self.engine.push(self.now, sample(i)).unwrap();
            self.pushed.push(id);
        }
    }

    fn drain(&mut self) {
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    /// One request, if the engine gives one now: served and answered. Whether it did.
    pub fn step(&mut self) -> bool {
        let Some(t) = self.engine.poll_transmit(self.now) else {
            self.drain();
            return false;
        };
        self.sent.push(t.clone());
        assert!(
            self.engine.poll_transmit(self.now).is_none(),
            "two requests in flight"
        );
        self.now = self.now.plus_millis(2);
        let o = self.gw.serve(self.now, &t);
        self.gw.deliver(&mut self.engine, self.now, &o);
        self.drain();
        true
    }

    /// One request now, or else after waiting for the next timeout.
    pub fn next(&mut self) -> bool {
        if self.step() {
            return true;
        }
        match self.engine.poll_timeout() {
            Some(t) if t > self.now => {
                self.now = t;
                self.step()
            }
            _ => false,
        }
    }

    /// Runs requests and waits out timeouts until nothing is pending (or `max` steps).
    pub fn run(&mut self, max: usize) {
        for _ in 0..max {
            if self.step() {
                continue;
            }
            if self.engine.pending() == 0 {
                return;
            }
            match self.engine.poll_timeout() {
                Some(t) if t > self.now => self.now = t,
                _ => return,
            }
        }
        panic!(
            "not done after {max} steps: {} pending",
            self.engine.pending()
        );
    }

    /// Every acknowledged message id, in order, with repetitions.
    pub fn acknowledged(&self) -> Vec<MsgId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Acknowledged { msg_ids } => Some(msg_ids.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Checks that every pushed reading was acknowledged exactly once and stored once.
    pub fn assert_all_delivered_once(&self) {
        let acked = self.acknowledged();
        let set: HashSet<MsgId> = acked.iter().copied().collect();
        assert_eq!(set.len(), acked.len(), "a reading acknowledged twice");
        let pushed: HashSet<MsgId> = self.pushed.iter().copied().collect();
        assert_eq!(set, pushed, "acknowledged ≠ pushed");
        let stored: HashSet<MsgId> = self.gw.stored.keys().map(|&k| MsgId(k)).collect();
        assert_eq!(stored, pushed, "stored ≠ pushed");
        assert_eq!(self.engine.pending(), 0);
        assert_eq!(self.engine.stats().acknowledged, pushed.len() as u64);
        // Stored byte for byte as pushed.
        for (id, r) in &self.gw.stored {
            let i = u64::from_be_bytes(r.extra[..].try_into().unwrap());
            assert_eq!(r.values, sample(i).values, "reading {id}");
        }
    }

    pub fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}
