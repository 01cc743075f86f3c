//! Benchmark support: building matching device and gateway configurations per suite and
//! running the pieces of a handshake separately, so each side can be timed; the crypto matrix
//! behind `iotseal bench crypto` ([`matrix`]) and the HTML report behind `iotseal report`
//! ([`report`]); the load generator behind `iotseal bench load` and `iotseal bench handshakes`
//! ([`load`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod limit;
pub mod load;
pub mod matrix;
pub mod mem;
pub mod report;
pub mod stats;

use std::sync::Arc;

use iotseal_proto::handshake::{
    DeviceConfig, DeviceHandshake, DeviceNext, GatewayConfig, GatewayIdentity, HandshakeServer,
    HelloReply, PinnedKey, RegisteredDevice,
};
use iotseal_proto::record::Session;
use iotseal_proto::{CryptoProvider, Suite, Time};

/// A fixed time for benchmarks.
pub const NOW: Time = Time(1_767_225_600_000);

/// A device configuration and a gateway that trust each other.
pub struct Setup {
    /// Device configuration.
    pub device: Arc<DeviceConfig>,
    /// Gateway handshake state.
    pub server: HandshakeServer,
    /// The device as registered at the gateway.
    pub registered: RegisteredDevice,
}

impl Setup {
    /// Keys generated for `suite`; device on `dp`, gateway on `gp`.
    pub fn new(suite: Suite, dp: CryptoProvider, gp: CryptoProvider) -> Self {
        let gkey = gp
            .signature(suite.sig)
            .unwrap()
            .generate(gp.random)
            .unwrap();
        let dkey = dp
            .signature(suite.sig)
            .unwrap()
            .generate(dp.random)
            .unwrap();
        let registered = RegisteredDevice {
            alg: suite.sig,
            public_key: dkey.public_key(),
            revoked: false,
            policy: None,
        };
        let pins = vec![PinnedKey {
            alg: suite.sig,
            public_key: gkey.public_key(),
        }];
        let mut dc = DeviceConfig::new(dp, b"bench-device".to_vec(), dkey, pins);
        dc.offers = vec![suite];
        let mut gc = GatewayConfig::new(gp, vec![GatewayIdentity::new(&gp, gkey)]).unwrap();
        gc.max_half_open = usize::MAX;
        gc.nonce_cache_capacity = usize::MAX;
        Self {
            device: Arc::new(dc),
            server: HandshakeServer::new(gc),
            registered,
        }
    }

    /// Device: start (ephemeral key, M1).
    pub fn device_start(&self) -> (DeviceHandshake, Vec<u8>) {
        self.device_start_at(NOW)
    }

    /// Device: start at `now`.
    pub fn device_start_at(&self, now: Time) -> (DeviceHandshake, Vec<u8>) {
        DeviceHandshake::start(self.device.clone(), now).unwrap()
    }

    /// Gateway: M1 to M2.
    pub fn gateway_hello(&mut self, m1: &[u8]) -> Vec<u8> {
        self.gateway_hello_at(NOW, m1)
    }

    /// Gateway: M1 to M2 at `now`.
    pub fn gateway_hello_at(&mut self, now: Time, m1: &[u8]) -> Vec<u8> {
        match self.server.handle_hello(now, m1, &|_| false).unwrap() {
            HelloReply::GatewayHello { bytes, .. } => bytes,
            HelloReply::Retry { .. } => panic!("unexpected retry"),
        }
    }

    /// Device: M2 to M3 and the session.
    pub fn device_finish(hs: DeviceHandshake, m2: &[u8]) -> (Session, Vec<u8>) {
        Self::device_finish_at(NOW, hs, m2)
    }

    /// Device: M2 to M3 and the session, at `now`.
    pub fn device_finish_at(now: Time, hs: DeviceHandshake, m2: &[u8]) -> (Session, Vec<u8>) {
        match hs.handle(now, m2).unwrap() {
            DeviceNext::Established(e) => (e.session, e.finish),
            DeviceNext::Retry { .. } => panic!("unexpected retry"),
        }
    }

    /// Gateway: M3 to the session.
    pub fn gateway_finish(&mut self, m3: &[u8]) -> Session {
        self.gateway_finish_at(NOW, m3)
    }

    /// Gateway: M3 to the session, at `now`.
    pub fn gateway_finish_at(&mut self, now: Time, m3: &[u8]) -> Session {
        let reg = self.registered.clone();
        let registry = move |_: &[u8]| Some(reg.clone());
        self.server
            .handle_finish(now, m3, &registry)
            .unwrap()
            .session
    }

    /// A whole handshake; returns (device session, gateway session).
    pub fn handshake(&mut self) -> (Session, Session) {
        self.handshake_at(NOW)
    }

    /// A whole handshake at `now`.
    pub fn handshake_at(&mut self, now: Time) -> (Session, Session) {
        let (hs, m1) = self.device_start_at(now);
        let m2 = self.gateway_hello_at(now, &m1);
        let (d, m3) = Self::device_finish_at(now, hs, &m2);
        let g = self.gateway_finish_at(now, &m3);
        (d, g)
    }

    /// Drops the gateway's expired handshake state (half-open handshakes, the nonce cache),
    /// so long runs do not grow it.
    pub fn expire(&mut self, now: Time) {
        self.server.expire(now);
    }
}

/// The providers by name.
pub fn providers() -> [(&'static str, CryptoProvider); 2] {
    [
        ("aws-lc", iotseal_crypto_awslc::default_provider()),
        ("rustcrypto", iotseal_crypto_rustcrypto::default_provider()),
    ]
}
