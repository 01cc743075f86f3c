//! An in-memory device/gateway pair on virtual time: builds matching configurations for any
//! suite and provider combination and runs handshakes without any I/O. The device side of a
//! handshake is driven by the device engine (`iotseal-device-core`, [`device_handshake`]);
//! the sessions are then taken out of it for the record layer's tests. Tests of the raw
//! handshake state machine call `DeviceHandshake` themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use iotseal_device_core::{ConfigError, Endpoint, Engine, EngineConfig, Event, Response};
use iotseal_proto::crypto::{CryptoError, CryptoProvider, Secret, SecureRandom, SigningKey};
use iotseal_proto::error::ApiMisuse;
use iotseal_proto::handshake::messages::msg_type;
use iotseal_proto::handshake::{
    DeviceConfig, DeviceRegistry, GatewayConfig, GatewayIdentity, HandshakeServer, HelloReply,
    PinnedKey, RegisteredDevice,
};
use iotseal_proto::record::Session;
use iotseal_proto::{Error, SigAlg, Suite, Time};

use crate::rng::SeededRandom;

/// A fixed start time for virtual clocks: 2026-01-01T00:00:00Z.
pub const T0: Time = Time(1_767_225_600_000);

/// `base` with a deterministic random source.
pub fn seeded(base: CryptoProvider, seed: u64) -> CryptoProvider {
    CryptoProvider {
        random: SeededRandom::new(seed).leak(),
        ..base
    }
}

/// A registry in memory.
#[derive(Debug, Default, Clone)]
pub struct MapRegistry(pub Arc<Mutex<HashMap<Vec<u8>, RegisteredDevice>>>);

impl MapRegistry {
    /// Registers or replaces a device.
    pub fn insert(&self, id: &[u8], dev: RegisteredDevice) {
        self.0.lock().unwrap().insert(id.to_vec(), dev);
    }

    /// The entry of a device.
    pub fn get(&self, id: &[u8]) -> Option<RegisteredDevice> {
        self.0.lock().unwrap().get(id).cloned()
    }

    /// Marks a device revoked.
    pub fn revoke(&self, id: &[u8]) {
        if let Some(d) = self.0.lock().unwrap().get_mut(id) {
            d.revoked = true;
        }
    }
}

impl DeviceRegistry for MapRegistry {
    fn lookup(&self, device_id: &[u8]) -> Option<RegisteredDevice> {
        self.0.lock().unwrap().get(device_id).cloned()
    }
}

/// A device and a gateway that trust each other.
pub struct Pair {
    /// The device's configuration.
    pub device: Arc<DeviceConfig>,
    /// The gateway's handshake state.
    pub server: HandshakeServer,
    /// The gateway's registry.
    pub registry: MapRegistry,
    /// Virtual time.
    pub now: Time,
    gateway_p: CryptoProvider,
    gateway_seed: u64,
    sig: SigAlg,
}

impl Pair {
    /// A pair for `suite`: the device on `device_p`, the gateway on `gateway_p`; identity keys
    /// generated from `seed`.
    pub fn new(
        device_p: CryptoProvider,
        gateway_p: CryptoProvider,
        suite: Suite,
        seed: u64,
    ) -> Self {
        Self::with_offers(device_p, gateway_p, vec![suite], seed)
    }

    /// A pair whose device offers `offers` (all with the same signature algorithm).
    pub fn with_offers(
        device_p: CryptoProvider,
        gateway_p: CryptoProvider,
        offers: Vec<Suite>,
        seed: u64,
    ) -> Self {
        let sig = offers[0].sig;
        let gkey = Self::gateway_key(gateway_p, sig, seed);
        let dkey = device_p
            .signature(sig)
            .unwrap()
            .generate(&SeededRandom::new(seed ^ 0xde71))
            .unwrap();
        let pins = vec![PinnedKey {
            alg: sig,
            public_key: gkey.public_key(),
        }];
        let registry = MapRegistry::default();
        let device_id = format!("dev-{seed}").into_bytes();
        registry.insert(
            &device_id,
            RegisteredDevice {
                alg: sig,
                public_key: dkey.public_key(),
                revoked: false,
                policy: None,
            },
        );
        let mut dc = DeviceConfig::new(device_p, device_id, dkey, pins);
        dc.offers = offers;
        let gc =
            GatewayConfig::new(gateway_p, vec![GatewayIdentity::new(&gateway_p, gkey)]).unwrap();
        Self {
            device: Arc::new(dc),
            server: HandshakeServer::new(gc),
            registry,
            now: T0,
            gateway_p,
            gateway_seed: seed,
            sig,
        }
    }

    fn gateway_key(p: CryptoProvider, sig: SigAlg, seed: u64) -> Box<dyn SigningKey> {
        p.signature(sig)
            .unwrap()
            .generate(&SeededRandom::new(seed ^ 0x6a7e))
            .unwrap()
    }

    /// A fresh gateway configuration with the same identity key.
    pub fn gateway_config(&self) -> GatewayConfig {
        let key = Self::gateway_key(self.gateway_p, self.sig, self.gateway_seed);
        GatewayConfig::new(
            self.gateway_p,
            vec![GatewayIdentity::new(&self.gateway_p, key)],
        )
        .unwrap()
    }

    /// Replaces the gateway with a fresh one (same identity) configured by `f`; all its
    /// state (half-open, caches) is gone, as after a restart.
    pub fn reconfigure(&mut self, f: impl FnOnce(&mut GatewayConfig)) {
        let mut cfg = self.gateway_config();
        f(&mut cfg);
        self.server = HandshakeServer::new(cfg);
    }

    /// Replaces the device configuration (tests change offers, pins, ids).
    pub fn edit_device(&mut self, f: impl FnOnce(&mut DeviceConfig)) {
        let old = Arc::get_mut(&mut self.device).expect("device config shared");
        f(old);
    }

    /// Runs a whole handshake (the device side by the engine, [`device_handshake`]); returns
    /// both sessions and what the messages were. Errors are the gateway's, or the device's
    /// refusal of an answer.
    pub fn handshake(&mut self) -> Result<Established, Error> {
        let now = self.now;
        let d = device_handshake(&self.device, &mut self.server, now, now)?;
        let g = self.server.handle_finish(now, d.finish(), &self.registry)?;
        let (device_id, gateway) = (g.device_id.clone(), g.session);
        Ok(Established {
            device: d.session,
            gateway,
            device_id,
            flights: d.flights,
            gateway_time: d.gateway_time,
        })
    }
}

/// The device's identity key, lent to an engine (it stays in the shared configuration).
#[derive(Debug)]
struct Lent(Arc<DeviceConfig>);

impl SigningKey for Lent {
    fn algorithm(&self) -> SigAlg {
        self.0.identity.algorithm()
    }
    fn public_key(&self) -> Vec<u8> {
        self.0.identity.public_key()
    }
    fn sign(&self, msg: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        self.0.identity.sign(msg, rng)
    }
    fn private_bytes(&self) -> Secret {
        self.0.identity.private_bytes()
    }
}

/// The device side of a completed hello exchange ([`device_handshake`]).
#[derive(Debug)]
pub struct DeviceFlights {
    /// Every handshake message in order: M1, [Retry, M1'], M2, M3.
    pub flights: Vec<Vec<u8>>,
    /// The device's session (its M3 not yet acknowledged).
    pub session: Session,
    /// The gateway time the device adopted from M2 (docs/protocol.md §10), if it did.
    pub gateway_time: Option<Time>,
}

impl DeviceFlights {
    /// M3 (the last flight).
    pub fn finish(&self) -> &[u8] {
        self.flights.last().map_or(&[], Vec::as_slice)
    }
}

/// Runs the device side of a handshake against `server` in memory:
/// [`DeviceDriver::start`] at `device_now`, then [`DeviceDriver::run`] with the gateway at
/// `gateway_now`.
pub fn device_handshake(
    device: &Arc<DeviceConfig>,
    server: &mut HandshakeServer,
    device_now: Time,
    gateway_now: Time,
) -> Result<DeviceFlights, Error> {
    DeviceDriver::start(device, device_now)?.run(server, gateway_now)
}

/// The device side of a handshake in memory, driven by the device engine
/// (`iotseal-device-core`, the one place it is written): M1, a Retry answered with M1', M2
/// verified, M3 built.
#[derive(Debug)]
pub struct DeviceDriver {
    engine: Engine,
    now: Time,
    /// The request the engine gave and the gateway has not answered yet.
    pending: Vec<u8>,
    flights: Vec<Vec<u8>>,
}

impl DeviceDriver {
    /// An engine for `device` (its identity lent, not copied) that has made M1 at
    /// `device_now` (its random draws happen here, before any gateway is built).
    pub fn start(device: &Arc<DeviceConfig>, device_now: Time) -> Result<Self, Error> {
        let c = device;
        let lent = DeviceConfig {
            provider: c.provider,
            device_id: c.device_id.clone(),
            identity: Box::new(Lent(c.clone())),
            offers: c.offers.clone(),
            pins: c.pins.clone(),
            skew_secs: c.skew_secs,
            session: c.session,
        };
        let mut engine =
            Engine::new(EngineConfig::from_device(lent), c.provider).map_err(|e| match e {
                ConfigError::Device(e) => e,
                _ => ApiMisuse::KeyAlgorithmMismatch.into(),
            })?;
        engine.connect();
        let mut d = Self {
            engine,
            now: device_now,
            pending: Vec::new(),
            flights: Vec::new(),
        };
        d.pending = d.next()?;
        Ok(d)
    }

    /// M1 as the engine made it.
    pub fn hello(&self) -> &[u8] {
        &self.pending
    }

    /// The engine's next request (recorded as a flight), or the device's refusal of the last
    /// answer.
    fn next(&mut self) -> Result<Vec<u8>, Error> {
        let t = self.engine.poll_transmit(self.now);
        let failed = std::iter::from_fn(|| self.engine.poll_event()).find_map(|e| match e {
            Event::HandshakeFailed(e) => Some(e),
            _ => None,
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let t = t.ok_or(Error::ApiMisuse(ApiMisuse::EmptyConfig))?;
        debug_assert_eq!(t.endpoint, Endpoint::Handshake);
        self.flights.push(t.body.clone());
        Ok(t.body)
    }

    /// Has `server` answer the hellos at `gateway_now` until the engine gives M3, then takes
    /// the session out of the engine (M3's [`HandshakeServer::handle_finish`] and its
    /// acknowledgement are the caller's). Errors: the gateway's refusal of a hello, or the
    /// device's refusal of an answer.
    pub fn run(
        mut self,
        server: &mut HandshakeServer,
        gateway_now: Time,
    ) -> Result<DeviceFlights, Error> {
        while self.pending.first() == Some(&msg_type::HELLO) {
            let answer = match server.handle_hello(gateway_now, &self.pending, &|_| false)? {
                HelloReply::GatewayHello { bytes, .. } | HelloReply::Retry { bytes, .. } => bytes,
            };
            self.engine
                .handle_response(self.now, Response::http(200, &answer));
            self.flights.push(answer);
            self.pending = self.next()?;
        }
        let adopted = self.engine.stats().clock_adoptions > 0;
        let gateway_time = adopted.then(|| self.engine.device_time(self.now));
        let session = self
            .engine
            .take_session()
            .ok_or(Error::ApiMisuse(ApiMisuse::EmptyConfig))?;
        Ok(DeviceFlights {
            flights: self.flights,
            session,
            gateway_time,
        })
    }
}

/// Result of [`Pair::handshake`].
#[derive(Debug)]
pub struct Established {
    /// The device's session.
    pub device: Session,
    /// The gateway's session.
    pub gateway: Session,
    /// The device id the gateway authenticated.
    pub device_id: Vec<u8>,
    /// Every handshake message in order (M1, [Retry, M1'], M2, M3).
    pub flights: Vec<Vec<u8>>,
    /// The gateway time the device may adopt.
    pub gateway_time: Option<Time>,
}
