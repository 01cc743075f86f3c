//! iotseal's own deterministic test vectors (docs/vectors/*.json): complete handshakes and a
//! few records per suite, generated with the rustcrypto provider and seeded randomness, and
//! checked against any provider on the receiving side of each message.

use std::sync::Arc;

use iotseal_proto::crypto::CryptoProvider;
use iotseal_proto::handshake::messages::GatewayHello;
use iotseal_proto::handshake::{
    DeviceConfig, DeviceHandshake, DeviceNext, GatewayConfig, GatewayIdentity, HandshakeServer,
    HelloReply, PinnedKey, RegisteredDevice, key_id,
};
use iotseal_proto::record::ContentType;
use iotseal_proto::{Suite, Time};
use serde_json::{Value, json};

use crate::pair::{MapRegistry, T0, seeded};
use crate::rng::SeededRandom;

/// Plaintexts of the device's records in every vector.
pub const PLAINTEXTS: [&[u8]; 3] = [b"", b"temperature=21.5", &[0xa5; 100]];

/// The file name of a suite's vector.
pub fn file_name(s: Suite) -> String {
    format!("{}.json", s.to_string().replace('/', "_").replace('+', "-"))
}

fn h(b: &[u8]) -> Value {
    Value::String(hex::encode(b))
}

fn unhex(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(
        v[field]
            .as_str()
            .unwrap_or_else(|| panic!("missing {field}")),
    )
    .expect("hex")
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

    json!({
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
        "device_ephemeral_private": h(eph_private.as_bytes()),
        "hello_nonce": h(&nonce),
        "shared_secret": h(shared.as_bytes()),
        "m1": h(&m1),
        "m2": h(&m2),
        "m3": h(&est.finish),
        "records": records,
        "ack": h(&ack),
    })
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
/// produce the same M1, accept M2, produce M3 (byte-identical when the signature is
/// deterministic) and the same records; as the gateway it must accept M3 from the recorded
/// half-open state, open every record and produce the same acknowledgement.
pub fn check(provider: CryptoProvider, v: &Value) -> Result<(), String> {
    let suite: Suite = v["suite"].as_str().unwrap().parse().map_err(|_| "suite")?;
    let now = Time(v["time_ms"].as_u64().unwrap());
    let dev = &v["device"];
    let gw = &v["gateway"];
    let device = device_config(
        provider,
        suite,
        &unhex(dev, "id"),
        &unhex(dev, "private_key"),
        &unhex(gw, "public_key"),
    );
    let nonce: [u8; 16] = unhex(v, "hello_nonce").try_into().map_err(|_| "nonce")?;
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
