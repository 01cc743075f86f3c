//! Memory held per idle session: 10,000 gateway sessions (real handshakes, in memory) in the
//! session table, measured as the process RSS delta, next to the inline sizes.
//!
//! Run alone, with output: `cargo test -p iotseal-gateway --test gateway_memory -- --nocapture`.

use std::sync::Arc;

use iotseal_gateway::registry::Registry;
use iotseal_gateway::sessions::{SessionEntry, SessionState, SessionTable};
use iotseal_gateway::storage::DeviceRecord;
use iotseal_proto::handshake::{
    DeviceConfig, DeviceHandshake, DeviceNext, GatewayConfig, GatewayIdentity, HandshakeServer,
    HelloReply, PinnedKey, RegisteredDevice,
};
use iotseal_proto::record::Session;
use iotseal_proto::{SigAlg, Suite, Time};

const N: usize = 10_000;

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn memory_per_idle_session() {
    let p = iotseal_crypto_awslc::default_provider();
    let suite: Suite = "x25519/ed25519/aes256gcm".parse().unwrap();
    let gkey = p
        .signature(SigAlg::Ed25519)
        .unwrap()
        .generate(p.random)
        .unwrap();
    let gpub = gkey.public_key();
    let dkey = iotseal_testkit::device_key(&p, SigAlg::Ed25519);
    let dpub = dkey.public_key();
    let mut dc = DeviceConfig::new(
        p,
        b"mem-device".to_vec(),
        dkey,
        vec![PinnedKey {
            alg: SigAlg::Ed25519,
            public_key: gpub,
        }],
    );
    dc.offers = vec![suite];
    let dc = Arc::new(dc);
    let registered = RegisteredDevice {
        alg: SigAlg::Ed25519,
        public_key: dpub.clone(),
        revoked: false,
        policy: None,
    };
    let lookup = move |_: &[u8]| Some(registered.clone());
    let mut gc = GatewayConfig::new(p, vec![GatewayIdentity::new(&p, gkey)]).unwrap();
    gc.response_cache_capacity = 1;
    let mut server = HandshakeServer::new(gc);

    let registry = Registry::load(&[DeviceRecord {
        id: "mem-device".into(),
        alg: SigAlg::Ed25519,
        public_key_hex: hex::encode(&dpub),
        revoked: false,
        created_ms: 0,
        last_seen_ms: None,
        readings: 0,
    }]);
    let device = registry.get(b"mem-device").unwrap();
    let mut now = Time(1_767_225_600_000);
    let handshake = |server: &mut HandshakeServer, now: Time| -> Session {
        let (hs, m1) = DeviceHandshake::start(dc.clone(), now).unwrap();
        let Ok(HelloReply::GatewayHello { bytes, .. }) = server.handle_hello(now, &m1, &|_| false)
        else {
            panic!("no M2")
        };
        let DeviceNext::Established(est) = hs.handle(now, &bytes).unwrap() else {
            panic!("retry")
        };
        server
            .handle_finish(now, &est.finish, &lookup)
            .unwrap()
            .session
    };

    // Warm up allocator and provider state, then measure.
    let warm = SessionTable::new(N + 1, N + 1);
    for _ in 0..200 {
        let s = handshake(&mut server, now);
        warm.insert(SessionEntry::new(s, device.clone(), now.as_millis()));
    }
    drop(warm);
    server.expire(now.plus_millis(10 * 60 * 1000));
    // N sessions into a fresh table (parked as the sweep parks idle sessions, or not); the
    // table and the RSS before and after.
    let mut fill = |park: bool| {
        let table = SessionTable::new(N + 1, N + 1);
        let before = rss_bytes();
        for i in 0..N {
            // Fresh handshake state now and then, so the nonce cache does not grow with N.
            if i % 500 == 0 {
                now = now.plus_millis(120_000);
                server.expire(now);
            }
            let mut s = handshake(&mut server, now);
            if park {
                s.park(now);
            }
            table.insert(SessionEntry::new(s, device.clone(), now.as_millis()));
        }
        now = now.plus_millis(120_000);
        server.expire(now);
        let after = rss_bytes();
        assert_eq!(table.len(), N);
        (table, before, after)
    };
    let (_table, before, after) = fill(false);
    // The same again, each session parked: its key objects are freed and the next session's
    // handshake reuses that memory.
    let (_parked, before_parked, after_parked) = fill(true);

    // The entry lives in an Arc (two counters); the table adds a map slot and an id.
    let inline = size_of::<SessionEntry>() + 16;
    println!(
        "inline sizes: SessionEntry {} B (holds SessionState {} B, of which Session {} B)",
        size_of::<SessionEntry>(),
        size_of::<SessionState>(),
        size_of::<Session>()
    );
    println!("inline per session (without key objects on the heap): {inline} B");

    match (before, after, before_parked, after_parked) {
        (Some(b), Some(a), Some(pb), Some(pa)) => {
            let per = a.saturating_sub(b) as f64 / N as f64;
            let per_parked = pa.saturating_sub(pb) as f64 / N as f64;
            println!(
                "RSS delta over {N} idle sessions ({suite}): {} KiB, {per:.0} B per session; \
                 parked: {} KiB, {per_parked:.0} B per session",
                a.saturating_sub(b) / 1024,
                pa.saturating_sub(pb) / 1024,
            );
            // A generous bound: sessions must stay in the low kilobytes.
            assert!(per < 16_384.0, "{per} B per session");
            // Parking frees the key objects (two aws-lc AES-GCM keys, ~1.3 KB here).
            assert!(
                per_parked < per,
                "parked {per_parked} B vs {per} B per session"
            );
        }
        _ => println!("RSS not available (no /proc): skipped the RSS measurement"),
    }
}
