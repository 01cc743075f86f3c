//! Handshake configuration of each role, identities, pins and the suite policy.

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::crypto::{CryptoProvider, HASH_LEN, Secret, SigningKey};
use crate::error::{ApiMisuse, Error};
use crate::handshake::MAX_DEVICE_ID;
use crate::handshake::messages::{KEY_ID_LEN, MAX_OFFERS};
use crate::handshake::session_id::SessionIdPolicy;
use crate::record::SessionConfig;
use crate::suite::{SigAlg, Suite};

/// A key identifier: the first 8 bytes of SHA-256(alg code || public key).
pub fn key_id(p: &CryptoProvider, alg: SigAlg, public_key: &[u8]) -> [u8; KEY_ID_LEN] {
    let h = identity_hash(p, alg, public_key);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&h[..KEY_ID_LEN]);
    id
}

/// SHA-256(alg code || public key): how an identity enters the transcript.
pub(crate) fn identity_hash(p: &CryptoProvider, alg: SigAlg, public_key: &[u8]) -> [u8; HASH_LEN] {
    let mut ctx = p.hash.start();
    ctx.update(&[alg.code()]);
    ctx.update(public_key);
    ctx.finish()
}

/// The key of the hello MAC: SHA-256("iotseal v1 mac1\0" || alg code || gateway public key).
/// Anyone holding the pin can compute it; it filters junk before any public-key work.
pub fn mac1_key(p: &CryptoProvider, alg: SigAlg, public_key: &[u8]) -> [u8; HASH_LEN] {
    let mut ctx = p.hash.start();
    ctx.update(b"iotseal v1 mac1\0");
    ctx.update(&[alg.code()]);
    ctx.update(public_key);
    ctx.finish()
}

/// A gateway public key a device trusts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedKey {
    /// Its algorithm.
    pub alg: SigAlg,
    /// The public key.
    pub public_key: Vec<u8>,
}

/// Which suites a gateway (or a device entry) accepts.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SuitePolicy {
    /// Suites allowed; empty means every suite.
    pub allowed: Vec<Suite>,
    /// Require a post-quantum key exchange (`mlkem768` or `x25519mlkem768`).
    pub require_pq_kem: bool,
    /// Require a post-quantum signature (`mldsa65` or `ed25519+mldsa65`).
    pub require_pq_sig: bool,
}

impl SuitePolicy {
    /// Whether `s` is allowed.
    pub fn allows(&self, s: Suite) -> bool {
        (self.allowed.is_empty() || self.allowed.contains(&s))
            && (!self.require_pq_kem || s.kem.is_post_quantum())
            && (!self.require_pq_sig || s.sig.is_post_quantum())
    }
}

/// Device-side configuration.
#[derive(Debug)]
pub struct DeviceConfig {
    /// Crypto provider.
    pub provider: CryptoProvider,
    /// The device identifier (1 to 32 bytes), sent only encrypted, in M3.
    pub device_id: Vec<u8>,
    /// The device's identity key; every offered suite uses its algorithm.
    pub identity: Box<dyn SigningKey>,
    /// Suites offered, most preferred first. The device accepts only these.
    pub offers: Vec<Suite>,
    /// Pinned gateway keys (several during a rotation). The first one keys the hello MAC.
    pub pins: Vec<PinnedKey>,
    /// Allowed clock skew in seconds (default 30); a clock adopted from M2 must come back
    /// within `skew / 2` seconds of sending M1.
    pub skew_secs: u32,
    /// Record-layer settings for the sessions.
    pub session: SessionConfig,
}

impl DeviceConfig {
    /// A configuration with the defaults: offers the default suite with the identity's
    /// algorithm (`x25519mlkem768/<alg>/aes256gcm`), skew 30 s.
    pub fn new(
        provider: CryptoProvider,
        device_id: Vec<u8>,
        identity: Box<dyn SigningKey>,
        pins: Vec<PinnedKey>,
    ) -> Self {
        let offers = alloc::vec![Suite {
            sig: identity.algorithm(),
            ..Suite::DEFAULT
        }];
        Self {
            provider,
            device_id,
            identity,
            offers,
            pins,
            skew_secs: 30,
            session: SessionConfig::default(),
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), Error> {
        if self.device_id.is_empty() || self.device_id.len() > MAX_DEVICE_ID {
            return Err(ApiMisuse::BadDeviceId.into());
        }
        if self.offers.is_empty() || self.offers.len() > MAX_OFFERS || self.pins.is_empty() {
            return Err(ApiMisuse::EmptyConfig.into());
        }
        let alg = self.identity.algorithm();
        if self.offers.iter().any(|s| s.sig != alg) {
            return Err(ApiMisuse::KeyAlgorithmMismatch.into());
        }
        Ok(())
    }
}

/// A gateway identity key with its cached identifiers.
#[derive(Debug)]
pub struct GatewayIdentity {
    /// The signing key.
    pub key: Box<dyn SigningKey>,
    pub(crate) public_key: Vec<u8>,
    pub(crate) key_id: [u8; KEY_ID_LEN],
    pub(crate) mac1_key: [u8; HASH_LEN],
}

impl GatewayIdentity {
    /// Wraps a signing key.
    pub fn new(p: &CryptoProvider, key: Box<dyn SigningKey>) -> Self {
        let public_key = key.public_key();
        let alg = key.algorithm();
        Self {
            key_id: key_id(p, alg, &public_key),
            mac1_key: mac1_key(p, alg, &public_key),
            public_key,
            key,
        }
    }

    /// The public key.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// The key identifier.
    pub fn key_id(&self) -> [u8; KEY_ID_LEN] {
        self.key_id
    }
}

/// What the gateway's registry says about a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredDevice {
    /// The algorithm of its key.
    pub alg: SigAlg,
    /// Its public key.
    pub public_key: Vec<u8>,
    /// Revoked devices are refused.
    pub revoked: bool,
    /// Per-device suite policy, on top of the gateway's.
    pub policy: Option<SuitePolicy>,
}

/// Gateway-side configuration.
#[derive(Debug)]
pub struct GatewayConfig {
    /// Crypto provider.
    pub provider: CryptoProvider,
    /// Identity keys; during a rotation old and new are both here. For each suite the gateway
    /// signs with the key the device's hello MAC names, else the first one of the suite's
    /// algorithm.
    pub identities: Vec<GatewayIdentity>,
    /// Which suites are accepted (the device's order decides among them).
    pub policy: SuitePolicy,
    /// Allowed clock skew for hellos, in seconds (default 30).
    pub skew_secs: u32,
    /// Most half-open handshakes at once.
    pub max_half_open: usize,
    /// Most half-open handshakes of one source (0: no cap); a hello from a source that holds
    /// half as many or more is answered with an Address retry (docs/protocol.md §7.3). Only
    /// for hellos given a source ([`crate::handshake::HandshakeServer::handle_hello_from`]).
    pub max_half_open_per_source: usize,
    /// From this many half-open handshakes on, every first hello given a source is answered
    /// with an Address retry (return routability under load); the retried hello is admitted.
    pub cookie_threshold: usize,
    /// How long a half-open handshake waits for M3, in seconds (at most `skew_secs` is
    /// used, at least 1). Its M2 stays in the answer cache as long.
    pub half_open_secs: u32,
    /// Most hello nonces remembered (each for its skew window).
    pub nonce_cache_capacity: usize,
    /// Most cached handshake answers.
    pub response_cache_capacity: usize,
    /// Record-layer settings for the sessions.
    pub session: SessionConfig,
    /// Key of the retry cookies' MAC; random per process (or shared by a cluster).
    pub cookie_secret: Secret,
    /// Which session ids new sessions get (default [`SessionIdPolicy::Any`]; a cluster node
    /// draws only inside the partitions it owns). Not visible on the wire.
    pub session_ids: SessionIdPolicy,
}

impl GatewayConfig {
    /// A configuration with defaults: skew 30 s, 4096 half-open (64 per source, Address
    /// retries from 2048 on, each waiting 10 s for M3), 65536 nonces, 8192 cached answers, a
    /// random cookie key, any session id.
    pub fn new(provider: CryptoProvider, identities: Vec<GatewayIdentity>) -> Result<Self, Error> {
        let cookie_secret = Secret::new(provider.random_vec(32)?);
        Ok(Self {
            provider,
            identities,
            policy: SuitePolicy::default(),
            skew_secs: 30,
            max_half_open: 4096,
            max_half_open_per_source: 64,
            cookie_threshold: 2048,
            half_open_secs: 10,
            nonce_cache_capacity: 65536,
            response_cache_capacity: 8192,
            session: SessionConfig::default(),
            cookie_secret,
            session_ids: SessionIdPolicy::Any,
        })
    }
}
