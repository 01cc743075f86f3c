//! Deterministic configurations shared by the targets and the corpus generator: identity keys
//! (loaded once), gateway and device configurations, the registry, and handshakes.
//!
//! The corpus generator must build exactly the same messages as the targets see (the same
//! device hello, the same session ids), so everything here is a pure function of the provider
//! and [`crate::rng::reset`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use iotseal_proto::crypto::{CryptoError, CryptoProvider, Secret, SecureRandom, SigningKey};
use iotseal_proto::handshake::messages::MAC1_LEN;
use iotseal_proto::handshake::{
    DeviceConfig, GatewayConfig, GatewayIdentity, HandshakeServer, PinnedKey, RegisteredDevice,
    SuitePolicy, mac1_key,
};
use iotseal_proto::record::Session;
use iotseal_proto::{AeadId, Error, KemId, SigAlg, Suite, Time};
use iotseal_test::pair::{MapRegistry, device_handshake};

use crate::provider::{FAKE, HANDSHAKE_ONLY, RUSTCRYPTO};
use crate::rng;

/// The fixed "now" of every target: 2026-01-01T00:00:00Z.
pub const NOW: Time = iotseal_test::pair::T0;

/// The cookie key of every gateway.
pub const COOKIE_SECRET: [u8; 32] = *b"fuzz cookie secret, fixed, 32 B!";

/// The signature algorithms, in the order the gateway lists its identities (the first one,
/// Ed25519, is the pin that keys device hellos).
pub const SIG_ALGS: [SigAlg; 4] = [
    SigAlg::Ed25519,
    SigAlg::EcdsaP256,
    SigAlg::MlDsa65,
    SigAlg::Ed25519MlDsa65,
];

/// Which kind of provider: keys are loaded once per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`crate::provider::FAKE`] (and [`crate::provider::HANDSHAKE_ONLY`]: same keys).
    Fake,
    /// RustCrypto.
    RustCrypto,
    /// aws-lc.
    AwsLc,
}

impl Kind {
    fn provider(self) -> CryptoProvider {
        match self {
            Self::Fake => FAKE,
            Self::RustCrypto => RUSTCRYPTO,
            Self::AwsLc => crate::provider::awslc(),
        }
    }
}

/// A signing key loaded once (with its public key), shared by every configuration built
/// afterwards: loading an ML-DSA key, or deriving its public key, per fuzz input would
/// dominate the run time.
#[derive(Clone, Copy, Debug)]
struct SharedKey {
    key: &'static dyn SigningKey,
    public: &'static [u8],
}

impl SigningKey for SharedKey {
    fn algorithm(&self) -> SigAlg {
        self.key.algorithm()
    }
    fn public_key(&self) -> Vec<u8> {
        self.public.to_vec()
    }
    fn sign(&self, msg: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, CryptoError> {
        self.key.sign(msg, rng)
    }
    fn private_bytes(&self) -> Secret {
        self.key.private_bytes()
    }
}

/// Who holds a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The gateway's identity keys.
    Gateway,
    /// The devices' keys.
    Device,
}

fn private_key(owner: Owner, alg: SigAlg) -> Vec<u8> {
    let tag = match owner {
        Owner::Gateway => 0x47,
        Owner::Device => 0x44,
    };
    (0..alg.private_key_len())
        .map(|i| tag ^ alg.code() ^ (i as u8).wrapping_mul(37))
        .collect()
}

type KeyTable = HashMap<(Kind, Owner, SigAlg), SharedKey>;

fn keys() -> &'static KeyTable {
    static KEYS: OnceLock<KeyTable> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut t = KeyTable::new();
        for kind in [Kind::Fake, Kind::RustCrypto, Kind::AwsLc] {
            let p = kind.provider();
            for owner in [Owner::Gateway, Owner::Device] {
                for alg in SIG_ALGS {
                    let k = p
                        .signature(alg)
                        .and_then(|s| s.load(&private_key(owner, alg)))
                        .expect("load a fixed key");
                    let public = Box::leak(k.public_key().into_boxed_slice());
                    t.insert(
                        (kind, owner, alg),
                        SharedKey {
                            key: Box::leak(k),
                            public,
                        },
                    );
                }
            }
        }
        t
    })
}

/// The key of `owner` for `alg` on provider `kind`.
pub fn key(kind: Kind, owner: Owner, alg: SigAlg) -> Box<dyn SigningKey> {
    Box::new(keys()[&(kind, owner, alg)])
}

/// The public key of `owner` for `alg` (the same on every real provider).
pub fn public_key(kind: Kind, owner: Owner, alg: SigAlg) -> Vec<u8> {
    keys()[&(kind, owner, alg)].public.to_vec()
}

/// A gateway on `p` with one identity per signature algorithm, the default policy (or
/// `policy`), and the fixed cookie key.
pub fn gateway(p: CryptoProvider, kind: Kind, policy: SuitePolicy) -> HandshakeServer {
    let ids = SIG_ALGS
        .iter()
        .map(|&alg| GatewayIdentity::new(&p, key(kind, Owner::Gateway, alg)))
        .collect();
    let mut cfg = GatewayConfig::new(p, ids).expect("gateway config");
    cfg.cookie_secret = Secret::from_slice(&COOKIE_SECRET);
    cfg.policy = policy;
    // Small tables: their limits are part of what is fuzzed.
    cfg.max_half_open = 4;
    cfg.nonce_cache_capacity = 8;
    cfg.response_cache_capacity = 4;
    HandshakeServer::new(cfg)
}

/// The key of the hello MAC of every gateway here (its first identity, Ed25519).
pub fn gateway_mac1_key(p: &CryptoProvider, kind: Kind) -> [u8; 32] {
    mac1_key(
        p,
        SigAlg::Ed25519,
        &public_key(kind, Owner::Gateway, SigAlg::Ed25519),
    )
}

/// Overwrites the last [`MAC1_LEN`] bytes of `msg` with the hello MAC of the bytes before
/// them (what a device holding the pin computes).
pub fn fix_mac1(p: &CryptoProvider, kind: Kind, msg: &mut [u8]) {
    if msg.len() < MAC1_LEN {
        return;
    }
    let n = msg.len() - MAC1_LEN;
    let mac = p.hmac.mac(&gateway_mac1_key(p, kind), &[&msg[..n]]);
    msg[n..].copy_from_slice(&mac[..MAC1_LEN]);
}

/// Device ids in the registry.
pub mod ids {
    /// Registered, Ed25519.
    pub const ED25519: &[u8] = b"dev-ed25519";
    /// Registered, ECDSA P-256.
    pub const ECDSA: &[u8] = b"dev-ecdsa";
    /// Registered, ML-DSA-65.
    pub const MLDSA: &[u8] = b"dev-mldsa";
    /// Registered, Ed25519 + ML-DSA-65.
    pub const COMPOSITE: &[u8] = b"dev-composite";
    /// Registered (Ed25519) but revoked.
    pub const REVOKED: &[u8] = b"dev-revoked";
    /// Registered (Ed25519) with a post-quantum-only policy.
    pub const PQ_ONLY: &[u8] = b"dev-pq-only";
}

/// The device id registered for `alg`.
pub fn device_id(alg: SigAlg) -> &'static [u8] {
    match alg {
        SigAlg::EcdsaP256 => ids::ECDSA,
        SigAlg::MlDsa65 => ids::MLDSA,
        SigAlg::Ed25519MlDsa65 => ids::COMPOSITE,
        _ => ids::ED25519,
    }
}

/// The registry of a gateway on provider `kind`.
pub fn registry(kind: Kind) -> MapRegistry {
    let r = MapRegistry::default();
    let dev = |alg| RegisteredDevice {
        alg,
        public_key: public_key(kind, Owner::Device, alg),
        revoked: false,
        policy: None,
    };
    for alg in SIG_ALGS {
        r.insert(device_id(alg), dev(alg));
    }
    r.insert(
        ids::REVOKED,
        RegisteredDevice {
            revoked: true,
            ..dev(SigAlg::Ed25519)
        },
    );
    r.insert(
        ids::PQ_ONLY,
        RegisteredDevice {
            policy: Some(SuitePolicy {
                require_pq_kem: true,
                ..SuitePolicy::default()
            }),
            ..dev(SigAlg::Ed25519)
        },
    );
    r
}

/// Classical key exchanges only: a device that offers the hybrid first is asked for another
/// key share.
pub fn classical_policy() -> SuitePolicy {
    SuitePolicy {
        allowed: Suite::all().filter(|s| !s.kem.is_post_quantum()).collect(),
        ..SuitePolicy::default()
    }
}

fn suite(kem: KemId, sig: SigAlg, aead: AeadId) -> Suite {
    Suite { kem, sig, aead }
}

/// The device offer lists the targets use (index = variant).
pub fn device_offers() -> Vec<Vec<Suite>> {
    use AeadId::*;
    use KemId::*;
    use SigAlg::*;
    vec![
        vec![suite(X25519, Ed25519, ChaCha20Poly1305)],
        // Two offers whose key exchanges differ: a gateway that prefers the second asks
        // for its key share (KeyShare retry).
        vec![
            suite(X25519MlKem768, Ed25519, Aes256Gcm),
            suite(X25519, Ed25519, Aes128Gcm),
        ],
        vec![suite(P256, EcdsaP256, Aes128Gcm)],
        vec![suite(MlKem768, MlDsa65, Aes256CtrHmacSha256)],
        vec![suite(X25519MlKem768, Ed25519MlDsa65, Aes256Gcm)],
    ]
}

/// A device configuration: offers `offers` (one signature algorithm), pins every gateway
/// key (Ed25519 first: it keys the hello MAC).
pub fn device(p: CryptoProvider, kind: Kind, offers: Vec<Suite>) -> Arc<DeviceConfig> {
    let alg = offers[0].sig;
    let pins = SIG_ALGS
        .iter()
        .map(|&a| PinnedKey {
            alg: a,
            public_key: public_key(kind, Owner::Gateway, a),
        })
        .collect();
    let mut c = DeviceConfig::new(
        p,
        device_id(alg).to_vec(),
        key(kind, Owner::Device, alg),
        pins,
    );
    c.offers = offers;
    Arc::new(c)
}

/// Both ends of a completed handshake, and its messages.
pub struct Handshake {
    /// The device's session.
    pub device: Session,
    /// The gateway's session.
    pub gateway: Session,
    /// M1, [Retry, M1'], M2, M3.
    pub flights: Vec<Vec<u8>>,
}

/// Runs a whole handshake on virtual time [`NOW`] (after [`rng::reset`]): the device side by
/// the device engine ([`device_handshake`]), the gateway's by `server`.
pub fn handshake(
    dev: Arc<DeviceConfig>,
    server: &mut HandshakeServer,
    registry: &MapRegistry,
) -> Result<Handshake, Error> {
    let d = device_handshake(&dev, server, NOW, NOW)?;
    let g = server.handle_finish(NOW, d.finish(), registry)?;
    let gateway = g.session;
    Ok(Handshake {
        device: d.session,
        gateway,
        flights: d.flights,
    })
}

/// A fresh established pair on `p` (fake public-key work, so cheap) for `suite`.
pub fn session_pair(p: CryptoProvider, suite: Suite) -> Handshake {
    rng::reset();
    let mut server = gateway(p, Kind::Fake, SuitePolicy::default());
    let dev = device(p, Kind::Fake, vec![suite]);
    handshake(dev, &mut server, &registry(Kind::Fake)).expect("fake handshake")
}

/// A suite for record-layer targets: fake handshake, the given AEAD.
pub fn record_suite(aead: AeadId) -> Suite {
    suite(KemId::X25519, SigAlg::Ed25519, aead)
}

/// Used by the record targets: [`HANDSHAKE_ONLY`] (genuine AEAD) or [`FAKE`].
pub fn record_provider(genuine_aead: bool) -> CryptoProvider {
    if genuine_aead { HANDSHAKE_ONLY } else { FAKE }
}
