//! Return routability under load over the gateway's HTTPS binding (docs/protocol.md §7.3,
//! §11, §18.4): a flood of fresh valid hellos from many source addresses (claimed through
//! PROXY v2 headers, so one test process can be many clients), each following the Address
//! retry, fills the half-open table; a legitimate device from another address still completes
//! its handshake and its reading is stored. No sleeps: everything runs as fast as it can,
//! within the half-open lifetime.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Env, metric, provider, root_trusting_config};
use iotseal_proto::handshake::messages::{Cookie, RetryReason};
use iotseal_proto::handshake::{DeviceConfig, DeviceHandshake, DeviceNext, PinnedKey};
use iotseal_proto::reading::{Reading, SensorKind, encode_batch};
use iotseal_proto::record::{ContentType, batch};
use iotseal_proto::{SigAlg, Suite, Time};
use ppp::v2::{Builder, Command, Protocol, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SUITE: &str = "x25519/ed25519/aes256gcm";

fn now() -> Time {
    common::now()
}

/// One request on a new connection that claims to come from `src` (PROXY v2): status, body.
async fn request(
    env: &Env,
    src: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let addr = env.gw().local_addr();
    let header =
        Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, addr))
            .build()
            .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&header).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(root_trusting_config(&env.cert_pem));
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        tls.connect("127.0.0.1".try_into().unwrap(), tcp),
    )
    .await
    .expect("TLS in time")
    .expect("TLS");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    // The gateway closes after the answer (Connection: close); a missing close_notify is fine.
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out[end + 4..].to_vec())
}

async fn hello(env: &Env, src: SocketAddr, m1: &[u8]) -> (u16, Vec<u8>) {
    request(
        env,
        src,
        "POST",
        "/v1/handshake",
        &[("content-type", "application/octet-stream")],
        m1,
    )
    .await
}

/// A device registered through the admin API (over a proxied connection too).
async fn device(env: &Env, id: &str) -> std::sync::Arc<DeviceConfig> {
    let suite: Suite = SUITE.parse().unwrap();
    let p = provider();
    let key = iotseal_testkit::device_key(&p, SigAlg::Ed25519);
    let body = iotseal_testkit::registration_json(id, SigAlg::Ed25519, &key.public_key());
    let auth = env.auth();
    let (status, b) = request(
        env,
        "192.0.2.250:1".parse().unwrap(),
        "POST",
        "/v1/devices",
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&b));
    let pins = env
        .public
        .identity
        .iter()
        .filter(|i| i.alg == SigAlg::Ed25519)
        .map(|i| PinnedKey {
            alg: i.alg,
            public_key: hex::decode(&i.public_key).unwrap(),
        })
        .collect();
    let mut cfg = DeviceConfig::new(p, id.as_bytes().to_vec(), key, pins);
    cfg.offers = vec![suite];
    std::sync::Arc::new(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_gets_in_while_many_sources_fill_the_half_open_table() {
    let env = Env::start(&[SigAlg::Ed25519], |s| {
        s.proxy_protocol = true;
        s.limits.half_open = 32;
        s.limits.half_open_per_source = 4;
        s.limits.half_open_cookie_threshold = 16;
        // Nothing expires during the test, however slow the machine (the flood takes seconds
        // in a debug build): the table is full because of the flood alone.
        s.limits.half_open_secs = 30;
    })
    .await;
    // The flooders hold valid pins (mac1 keys are public) but never send M3.
    let flood_cfg = device(&env, "flooder").await;
    let mut address_retries = 0;
    let mut busy = 0;
    for i in 0..40u8 {
        let src: SocketAddr = format!("198.51.100.{}:4000", i + 1).parse().unwrap();
        for _ in 0..6 {
            let (hs, m1) = DeviceHandshake::start(flood_cfg.clone(), now()).unwrap();
            let (status, body) = hello(&env, src, &m1).await;
            assert_eq!(status, 200, "{body:?}");
            if body[0] != 0x02 {
                continue;
            }
            // Under load: the Address retry, followed as a device would (return routable).
            assert_eq!(
                Cookie::from_retry_message(&body).unwrap().reason,
                RetryReason::Address
            );
            address_retries += 1;
            let DeviceNext::Retry { hello: m1b, .. } = hs.handle(now(), &body).unwrap() else {
                panic!("a retry taken as M2")
            };
            let (status, body) = hello(&env, src, &m1b).await;
            match status {
                200 => assert_eq!(body[0], 0x03, "M2 after the Address retry"),
                503 => busy += 1,
                s => panic!("{s} {body:?}"),
            }
        }
    }
    let m = env.gw().metrics().render();
    assert_eq!(metric(&m, "iotseal_half_open_handshakes "), 32, "{m}");
    assert!(address_retries > 100, "{address_retries}");
    assert!(busy > 0, "sources at their cap were refused");
    assert!(
        metric(
            &m,
            "iotseal_refusals_total{reason=\"half_open_per_source\"}"
        ) >= 1,
        "{m}"
    );
    assert!(metric(&m, "iotseal_half_open_evictions_total ") >= 1, "{m}");

    // A legitimate device from an address holding nothing: Address retry, then admitted
    // (evicting the oldest entry of a source holding the most), M3 with a reading stored.
    let cfg = device(&env, "legit-001").await;
    let src: SocketAddr = "192.0.2.10:5000".parse().unwrap();
    let (hs, m1) = DeviceHandshake::start(cfg.clone(), now()).unwrap();
    let (status, body) = hello(&env, src, &m1).await;
    assert_eq!(status, 200);
    let DeviceNext::Retry {
        handshake,
        hello: m1b,
    } = hs.handle(now(), &body).unwrap()
    else {
        panic!("under load the first hello gets a retry")
    };
    let (status, m2) = hello(&env, src, &m1b).await;
    assert_eq!(status, 200, "{m2:?}");
    let DeviceNext::Established(est) = handshake.handle(now(), &m2).unwrap() else {
        panic!("M2 taken as a retry")
    };
    let mut session = est.session;
    let reading = Reading {
        msg_id: 1,
        time_ms: now().as_millis(),
        values: vec![(SensorKind::Temperature, 21.5)],
        extra: Vec::new(),
    };
    let mut rec = Vec::new();
    session
        .seal(
            now(),
            ContentType::Data,
            &encode_batch(std::slice::from_ref(&reading)),
            &mut rec,
        )
        .unwrap();
    let mut flight = est.finish.clone();
    batch::push(&mut flight, &rec);
    let (status, ack) = hello(&env, src, &flight).await;
    assert_eq!(status, 200, "{ack:?}");
    let acks = common::open_acks(&mut session, &ack);
    assert!(common::acked(&acks[0], 0), "{acks:?}");
    let stored = env.storage.all_readings();
    assert!(
        stored
            .iter()
            .any(|r| &*r.device_id == "legit-001" && r.msg_id == 1),
        "{} readings stored, none of legit-001",
        stored.len()
    );
}
