//! iotseal's own deterministic test vectors (docs/vectors/*.json): complete handshakes and a
//! few records per suite, generated with the rustcrypto provider and seeded randomness, and
//! checked against any provider on the receiving side of each message. The scenario vectors
//! (retries, key updates, acknowledgements, Close) are in [`crate::scenario_vectors`].

use std::sync::Arc;

use iotseal_proto::crypto::{
    ActiveKeyExchange, CryptoError, CryptoProvider, KemResponse, KeyExchange, SecureRandom,
};
use iotseal_proto::handshake::messages::GatewayHello;
use iotseal_proto::handshake::{
    DeviceConfig, DeviceHandshake, DeviceNext, GatewayConfig, GatewayIdentity, HandshakeServer,
    HelloReply, PinnedKey, RegisteredDevice, key_id,
};
use iotseal_proto::record::ContentType;
use iotseal_proto::{KemId, Suite, Time};
use serde_json::{Map, Value, json};

use crate::pair::{MapRegistry, T0, seeded};
use crate::rng::{Drawn, FixedRandom, SeededRandom, with_fixed};

/// Plaintexts of the device's records in every vector.
pub const PLAINTEXTS: [&[u8]; 3] = [b"", b"temperature=21.5", &[0xa5; 100]];

/// The file name of a suite's vector.
pub fn file_name(s: Suite) -> String {
    format!("{}.json", s.to_string().replace('/', "_").replace('+', "-"))
}

pub(crate) fn h(b: &[u8]) -> Value {
    Value::String(hex::encode(b))
}

pub(crate) fn unhex(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("missing {field}")),
    )
    .expect("hex")
}

/// Length of an ML-KEM-768 seed `d || z` (FIPS 203 `ML-KEM.KeyGen_internal`).
pub const MLKEM_SEED_LEN: usize = 64;
/// Length of an expanded ML-KEM-768 decapsulation key.
pub const MLKEM_DK_LEN: usize = 2400;

/// Expands an ML-KEM-768 seed `d || z` into the 2400-byte FIPS 203 decapsulation key, with
/// the ml-kem crate (`DecapsulationKey::from_seed`), independently of either provider.
pub fn expand_mlkem_seed(seed: &[u8]) -> Result<Vec<u8>, String> {
    #[allow(deprecated)] // the expanded form is what the vectors record next to the seed
    use ml_kem::ExpandedKeyEncoding as _;
    let seed: [u8; MLKEM_SEED_LEN] = seed
        .try_into()
        .map_err(|_| format!("ML-KEM seed of {} bytes, not 64", seed.len()))?;
    let dk = ml_kem::DecapsulationKey768::from_seed(seed.into());
    #[allow(deprecated)]
    let expanded = dk.to_expanded_bytes().to_vec();
    Ok(expanded)
}

/// How many bytes a device draws for an ephemeral key of `kem`, in this order: X25519 and
/// P-256 the 32-byte scalar; ML-KEM-768 the 64-byte seed `d || z`; `x25519mlkem768` the
/// ML-KEM seed, then the X25519 scalar.
pub fn ephemeral_draw_len(kem: KemId) -> usize {
    match kem {
        KemId::X25519 | KemId::P256 => 32,
        KemId::MlKem768 => MLKEM_SEED_LEN,
        KemId::X25519MlKem768 => MLKEM_SEED_LEN + 32,
        other => panic!("no ephemeral key format for {other}"),
    }
}

/// The fields that give an ephemeral key, named `<prefix>private` (the format of
/// protocol.md §3.5), and for ML-KEM `<prefix>mlkem_seed` (64 bytes `d || z`) and, for
/// `x25519mlkem768`, `<prefix>x25519_private` (the 32-byte X25519 scalar, the last 32 bytes of
/// `<prefix>private`). `draws` are the bytes the key was generated from
/// ([`ephemeral_draw_len`]).
pub(crate) fn ephemeral_fields(
    kem: KemId,
    prefix: &str,
    draws: &[u8],
    private: &[u8],
    out: &mut Map<String, Value>,
) {
    out.insert(format!("{prefix}private"), h(private));
    if matches!(kem, KemId::MlKem768 | KemId::X25519MlKem768) {
        let (seed, x25519) = draws.split_at(MLKEM_SEED_LEN);
        assert_eq!(
            expand_mlkem_seed(seed).unwrap(),
            private[..MLKEM_DK_LEN],
            "the seed gives the expanded key"
        );
        out.insert(format!("{prefix}mlkem_seed"), h(seed));
        if kem == KemId::X25519MlKem768 {
            assert_eq!(x25519, &private[MLKEM_DK_LEN..]);
            out.insert(format!("{prefix}x25519_private"), h(x25519));
        }
    }
}

/// Reads the ephemeral key fields of `ephemeral_fields`, checks that they agree (the ML-KEM
/// seed expands to the decapsulation key in `<prefix>private`, the hybrid's private key is
/// that key followed by `<prefix>x25519_private`) and returns the bytes a device draws to
/// generate that key.
pub fn ephemeral_draws(kem: KemId, v: &Value, prefix: &str) -> Result<Vec<u8>, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let f = format!("{prefix}{name}");
        let s = v[&f].as_str().ok_or_else(|| format!("missing {f}"))?;
        hex::decode(s).map_err(|e| format!("{f}: {e}"))
    };
    let private = field("private")?;
    match kem {
        KemId::X25519 | KemId::P256 => {
            if private.len() != 32 {
                return Err(format!("{prefix}private is not 32 bytes"));
            }
            Ok(private)
        }
        KemId::MlKem768 | KemId::X25519MlKem768 => {
            let seed = field("mlkem_seed")?;
            let mut expect = expand_mlkem_seed(&seed)?;
            let mut draws = seed;
            if kem == KemId::X25519MlKem768 {
                let x = field("x25519_private")?;
                if x.len() != 32 {
                    return Err(format!("{prefix}x25519_private is not 32 bytes"));
                }
                expect.extend_from_slice(&x);
                draws.extend_from_slice(&x);
            }
            if private != expect {
                return Err(format!(
                    "{prefix}private is not the expansion of {prefix}mlkem_seed{}",
                    if kem == KemId::X25519MlKem768 {
                        format!(" followed by {prefix}x25519_private")
                    } else {
                        String::new()
                    }
                ));
            }
            Ok(draws)
        }
        other => Err(format!("no ephemeral key format for {other}")),
    }
}

/// ML-KEM-768 of a provider whose key generation does not take its seed from the `rng`
/// argument (aws-lc): draws the 64-byte seed from `rng`, expands it with the ml-kem crate and
/// loads the expanded key into the provider's own ML-KEM, which does all the rest.
#[derive(Debug)]
struct SeedFromRng(&'static dyn KeyExchange);

impl KeyExchange for SeedFromRng {
    fn id(&self) -> KemId {
        KemId::MlKem768
    }

    fn start(&self, rng: &dyn SecureRandom) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        let mut seed = [0u8; MLKEM_SEED_LEN];
        rng.fill(&mut seed)?;
        let dk = expand_mlkem_seed(&seed).map_err(|_| CryptoError::InvalidKey)?;
        self.0.dangerous_import_ephemeral(&dk)
    }

    fn respond(
        &self,
        peer_share: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<KemResponse, CryptoError> {
        self.0.respond(peer_share, rng)
    }

    fn dangerous_import_ephemeral(
        &self,
        private: &[u8],
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.0.dangerous_import_ephemeral(private)
    }
}

/// `p` for replaying a device from recorded inputs: its random source is `random` (the
/// recorded draws), and its ML-KEM-768 generates a key from a 64-byte seed drawn from that
/// source: the provider's own if it takes the seed from `rng` (rustcrypto), else
/// `SeedFromRng` (aws-lc keeps its own randomness for ML-KEM key generation).
pub fn replay_provider(p: CryptoProvider, random: &'static dyn SecureRandom) -> CryptoProvider {
    let kems: Vec<&'static dyn KeyExchange> = p
        .kems
        .iter()
        .map(|&k| {
            if k.id() != KemId::MlKem768 {
                return k;
            }
            let (_, drawn) = with_fixed(&[0x5e; MLKEM_SEED_LEN], |r| k.start(r).map(|_| ()));
            if drawn == Drawn::All {
                k
            } else {
                let wrapped: &'static dyn KeyExchange = Box::leak(Box::new(SeedFromRng(k)));
                wrapped
            }
        })
        .collect();
    CryptoProvider {
        kems: kems.leak(),
        random,
        ..p
    }
}

/// Generates the vector of `suite` with the rustcrypto provider.
pub fn generate(suite: Suite) -> Value {
    let base = iotseal_crypto_rustcrypto::default_provider();
    let seed = u64::from_be_bytes([
        0,
        0,
        0,
        0,
        0,
        suite.to_bytes()[0],
        suite.to_bytes()[1],
        suite.to_bytes()[2],
    ]);
    let dp = seeded(base, seed ^ 0xd);
    let gp = seeded(base, seed ^ 0x9);
    let now = T0;

    let dkey = base
        .signature(suite.sig)
        .unwrap()
        .generate(&SeededRandom::new(seed ^ 0x1d))
        .unwrap();
    let gkey = base
        .signature(suite.sig)
        .unwrap()
        .generate(&SeededRandom::new(seed ^ 0x19))
        .unwrap();
    let device_id = b"sensor-0001".to_vec();
    let eph = base
        .kem(suite.kem)
        .unwrap()
        .start(&SeededRandom::new(seed ^ 0xe))
        .unwrap();
    let eph_private = eph.dangerous_private_bytes().unwrap();
    // The same stream again: the bytes the key was generated from (ML-KEM: the seed d || z).
    let mut eph_draws = vec![0u8; ephemeral_draw_len(suite.kem)];
    SeededRandom::new(seed ^ 0xe).fill(&mut eph_draws).unwrap();
    let mut eph_fields = Map::new();
    ephemeral_fields(
        suite.kem,
        "device_ephemeral_",
        &eph_draws,
        eph_private.as_bytes(),
        &mut eph_fields,
    );
    let nonce = [0x4e; 16];

    let device = device_config(
        dp,
        suite,
        &device_id,
        dkey.private_bytes().as_bytes(),
        &gkey.public_key(),
    );
    let mut server = HandshakeServer::new(
        GatewayConfig::new(
            gp,
            vec![GatewayIdentity::new(
                &gp,
                gp.signature(suite.sig)
                    .unwrap()
                    .load(gkey.private_bytes().as_bytes())
                    .unwrap(),
            )],
        )
        .unwrap(),
    );
    let registry = MapRegistry::default();
    registry.insert(
        &device_id,
        RegisteredDevice {
            alg: suite.sig,
            public_key: dkey.public_key(),
            revoked: false,
            policy: None,
        },
    );

    let (hs, m1) =
        DeviceHandshake::dangerous_start_with(device, now, eph_private.as_bytes(), nonce).unwrap();
    let HelloReply::GatewayHello { bytes: m2, .. } =
        server.handle_hello(now, &m1, &|_| false).unwrap()
    else {
        panic!("unexpected retry")
    };
    let shared = base
        .kem(suite.kem)
        .unwrap()
        .dangerous_import_ephemeral(eph_private.as_bytes())
        .unwrap()
        .complete(GatewayHello::decode(&m2).unwrap().share)
        .unwrap();
    let DeviceNext::Established(mut est) = hs.handle(now, &m2).unwrap() else {
        panic!()
    };
    let mut g = server
        .handle_finish(now, &est.finish, &registry)
        .unwrap()
        .session;
    let mut records = Vec::new();
    for (i, pt) in PLAINTEXTS.iter().enumerate() {
        let mut rec = Vec::new();
        let t = Time(now.0 + 1000 * i as u64);
        let seq = est
            .session
            .seal(t, ContentType::Data, pt, &mut rec)
            .unwrap();
        let mut r = rec.clone();
        let o = g.open(t, &mut r).unwrap();
        assert_eq!(o.plaintext, *pt);
        g.accept(seq).unwrap();
        records.push(json!({"seq": seq, "time_ms": t.0, "plaintext": h(pt), "record": h(&rec)}));
    }
    let mut ack = Vec::new();
    g.seal_ack(now, &mut ack).unwrap();

    let mut v = json!({
        "suite": suite.to_string(),
        "generator": "iotseal-test protocol_vectors::generate (rustcrypto provider, SeededRandom)",
        "time_ms": now.0,
        "device": {
            "id": h(&device_id),
            "private_key": h(dkey.private_bytes().as_bytes()),
            "public_key": h(&dkey.public_key()),
        },
        "gateway": {
            "private_key": h(gkey.private_bytes().as_bytes()),
            "public_key": h(&gkey.public_key()),
            "key_id": h(&key_id(&base, suite.sig, &gkey.public_key())),
        },
        "hello_nonce": h(&nonce),
        "shared_secret": h(shared.as_bytes()),
        "m1": h(&m1),
        "m2": h(&m2),
        "m3": h(&est.finish),
        "records": records,
        "ack": h(&ack),
    });
    v.as_object_mut().unwrap().extend(eph_fields);
    v
}

fn device_config(
    p: CryptoProvider,
    suite: Suite,
    id: &[u8],
    private: &[u8],
    gw_public: &[u8],
) -> Arc<DeviceConfig> {
    let key = p.signature(suite.sig).unwrap().load(private).unwrap();
    let mut c = DeviceConfig::new(
        p,
        id.to_vec(),
        key,
        vec![PinnedKey {
            alg: suite.sig,
            public_key: gw_public.to_vec(),
        }],
    );
    c.offers = vec![suite];
    Arc::new(c)
}

/// Checks `provider` against a vector as the receiver of each message: as the device it must
/// produce the same M1 (from the recorded ephemeral private key, and again from the bytes the
/// key is generated from: the ML-KEM seed, which must expand to that private key), accept
/// M2, produce M3 (byte-identical when the signature is deterministic) and the same records;
/// as the gateway it must accept M3 from the recorded half-open state, open every record and
/// produce the same acknowledgement.
pub fn check(provider: CryptoProvider, v: &Value) -> Result<(), String> {
    let suite: Suite = v["suite"].as_str().unwrap().parse().map_err(|_| "suite")?;
    let now = Time(v["time_ms"].as_u64().unwrap());
    let dev = &v["device"];
    let gw = &v["gateway"];
    if unhex(gw, "key_id") != key_id(&provider, suite.sig, &unhex(gw, "public_key")) {
        return Err("gateway.key_id is not the key id of gateway.public_key".into());
    }
    let device = device_config(
        provider,
        suite,
        &unhex(dev, "id"),
        &unhex(dev, "private_key"),
        &unhex(gw, "public_key"),
    );
    let nonce: [u8; 16] = unhex(v, "hello_nonce").try_into().map_err(|_| "nonce")?;

    // M1 from the generation inputs (the ML-KEM seed, not the expanded key), through the
    // device's ordinary start: the ephemeral key and the nonce come from the random source.
    let draws = ephemeral_draws(suite.kem, v, "device_ephemeral_")?;
    let random = FixedRandom::concat(&[&draws, &nonce]).leak();
    let (_, m1) = DeviceHandshake::start(
        device_config(
            replay_provider(provider, random),
            suite,
            &unhex(dev, "id"),
            &unhex(dev, "private_key"),
            &unhex(gw, "public_key"),
        ),
        now,
    )
    .map_err(|e| format!("start from the seed: {e}"))?;
    if m1 != unhex(v, "m1") || random.remaining() != 0 {
        return Err("M1 from the ephemeral's seed differs".into());
    }
    let (hs, m1) = DeviceHandshake::dangerous_start_with(
        device,
        now,
        &unhex(v, "device_ephemeral_private"),
        nonce,
    )
    .map_err(|e| format!("start: {e}"))?;
    if m1 != unhex(v, "m1") {
        return Err("M1 differs".into());
    }
    let DeviceNext::Established(mut est) = hs
        .handle(now, &unhex(v, "m2"))
        .map_err(|e| format!("device at M2: {e}"))?
    else {
        return Err("unexpected retry".into());
    };
    let m3 = unhex(v, "m3");
    let deterministic_sig = matches!(suite.sig, iotseal_proto::SigAlg::Ed25519);
    if deterministic_sig && est.finish != m3 {
        return Err("M3 differs".into());
    }
    let mut own_records = Vec::new();
    for r in v["records"].as_array().unwrap() {
        let mut rec = Vec::new();
        est.session
            .seal(
                Time(r["time_ms"].as_u64().unwrap()),
                ContentType::Data,
                &unhex(r, "plaintext"),
                &mut rec,
            )
            .map_err(|e| format!("seal: {e}"))?;
        if deterministic_sig && rec != unhex(r, "record") {
            return Err(format!("record {} differs", r["seq"]));
        }
        own_records.push(rec);
    }
    if !deterministic_sig {
        // A randomized signature changes M3 and so every later key: check this provider's M3
        // and records against a gateway resumed from the recorded state instead.
        let mut g = resumed_gateway(provider, suite, v, now)?
            .handle_finish(now, &est.finish, &registry_of(suite, v))
            .map_err(|e| format!("gateway at this provider's M3: {e}"))?
            .session;
        for (r, rec) in v["records"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&mut own_records)
        {
            let o = g
                .open(Time(r["time_ms"].as_u64().unwrap()), rec)
                .map_err(|e| format!("open own: {e}"))?;
            if o.plaintext != unhex(r, "plaintext") {
                return Err("own plaintext differs".into());
            }
        }
    }

    // Gateway side, from the recorded half-open state.
    let mut server = resumed_gateway(provider, suite, v, now)?;
    let registry = registry_of(suite, v);
    let mut g = server
        .handle_finish(now, &m3, &registry)
        .map_err(|e| format!("gateway at M3: {e}"))?
        .session;
    for r in v["records"].as_array().unwrap() {
        let mut rec = unhex(r, "record");
        let o = g
            .open(Time(r["time_ms"].as_u64().unwrap()), &mut rec)
            .map_err(|e| format!("open: {e}"))?;
        if o.plaintext != unhex(r, "plaintext") {
            return Err("plaintext differs".into());
        }
        let seq = o.seq;
        g.accept(seq).map_err(|e| format!("{e}"))?;
    }
    let mut ack = Vec::new();
    g.seal_ack(now, &mut ack).map_err(|e| format!("{e}"))?;
    if ack != unhex(v, "ack") {
        return Err("ack differs".into());
    }
    Ok(())
}

fn resumed_gateway(
    provider: CryptoProvider,
    suite: Suite,
    v: &Value,
    now: Time,
) -> Result<HandshakeServer, String> {
    let gw = &v["gateway"];
    let gkey = provider
        .signature(suite.sig)
        .unwrap()
        .load(&unhex(gw, "private_key"))
        .map_err(|e| format!("{e}"))?;
    let mut server = HandshakeServer::new(
        GatewayConfig::new(provider, vec![GatewayIdentity::new(&provider, gkey)]).unwrap(),
    );
    server
        .dangerous_resume_half_open(
            now,
            &unhex(v, "m1"),
            &unhex(v, "m2"),
            &unhex(v, "shared_secret"),
        )
        .map_err(|e| format!("resume: {e}"))?;
    Ok(server)
}

fn registry_of(suite: Suite, v: &Value) -> MapRegistry {
    let dev = &v["device"];
    let registry = MapRegistry::default();
    registry.insert(
        &unhex(dev, "id"),
        RegisteredDevice {
            alg: suite.sig,
            public_key: unhex(dev, "public_key"),
            revoked: false,
            policy: None,
        },
    );
    registry
}
