//! An in-memory device/gateway pair on virtual time: builds matching configurations for any
//! suite and provider combination and runs handshakes without any I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use iotseal_proto::crypto::CryptoProvider;
use iotseal_proto::handshake::{
    DeviceConfig, DeviceEstablished, DeviceHandshake, DeviceNext, DeviceRegistry, GatewayConfig,
    GatewayIdentity, HandshakeServer, HelloReply, PinnedKey, RegisteredDevice,
};
use iotseal_proto::record::Session;
use iotseal_proto::{Error, Suite, Time};

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
    sig: iotseal_proto::SigAlg,
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

    fn gateway_key(
        p: CryptoProvider,
        sig: iotseal_proto::SigAlg,
        seed: u64,
    ) -> Box<dyn iotseal_proto::crypto::SigningKey> {
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

    /// Runs a whole handshake; returns both sessions and what the messages were.
    pub fn handshake(&mut self) -> Result<Established, Error> {
        let now = self.now;
        let (hs, m1) = DeviceHandshake::start(self.device.clone(), now)?;
        let mut flights = vec![m1.clone()];
        let mut reply = self.server.handle_hello(now, &m1, &|_| false)?;
        let mut hs = hs;
        let est = loop {
            let bytes = match &reply {
                HelloReply::GatewayHello { bytes, .. } | HelloReply::Retry { bytes, .. } => {
                    bytes.clone()
                }
            };
            flights.push(bytes.clone());
            match hs.handle(now, &bytes)? {
                DeviceNext::Retry { handshake, hello } => {
                    flights.push(hello.clone());
                    hs = handshake;
                    reply = self.server.handle_hello(now, &hello, &|_| false)?;
                }
                DeviceNext::Established(e) => break e,
            }
        };
        flights.push(est.finish.clone());
        let g = self
            .server
            .handle_finish(now, &est.finish, &self.registry)?;
        let device_id = g.device_id.clone();
        let gateway = g.session;
        let DeviceEstablished {
            session,
            gateway_time,
            ..
        } = *est;
        Ok(Established {
            device: session,
            gateway,
            device_id,
            flights,
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
