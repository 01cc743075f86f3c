//! The gateway over real HTTPS: a server on 127.0.0.1:0 in-process, a rustls client that
//! trusts its self-signed certificate, devices driven by the core.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hyper::Method;
use iotseal_gateway::clock::ManualClock;
use iotseal_gateway::storage::Storage;
use iotseal_proto::handshake::messages::decode_alert;
use iotseal_proto::reading::Reading;
use iotseal_proto::record::{ContentType, Header};
use iotseal_proto::{Refusal, SigAlg, Suite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn suite(s: &str) -> Suite {
    s.parse().unwrap()
}

fn payloads(rs: &[Reading]) -> Vec<Vec<u8>> {
    rs.iter()
        .map(|r| {
            let mut v = Vec::new();
            r.encode(&mut v);
            v
        })
        .collect()
}

async fn full_exchange(s: Suite) {
    let env = Env::start(&[s.sig], |_| {}).await;
    let mut dev = env.device("sensor-1", s).await;
    let mut conn = env.conn().await;
    assert_eq!(
        conn.key_exchange_group,
        Some(rustls::NamedGroup::X25519MLKEM768),
        "TLS key exchange"
    );
    assert_eq!(
        conn.protocol_version,
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // Handshake with two readings riding on M3.
    let mut hs = dev.handshake(&mut conn, 2).await;
    let acks = open_acks(&mut hs.session, &hs.answer);
    assert_eq!(acks.len(), 1);
    assert!(acked(&acks[0], 0), "M3's record acknowledged: {acks:?}");

    // Two more records in one batch.
    let g1 = dev.readings(3);
    let g2 = dev.readings(1);
    let recs = seal_records(&mut hs.session, &[g1.clone(), g2.clone()]);
    let r = conn
        .post_binary("/v1/records", framed(&recs))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/octet-stream");
    let acks = open_acks(&mut hs.session, &r.body);
    assert_eq!(acks.len(), 1, "one ack per session");
    assert_eq!(acks[0], vec![(0, 2)]);

    // Stored byte for byte.
    let mut sent = hs.sent.clone();
    sent.extend(g1);
    sent.extend(g2);
    let stored = env.storage.all_readings();
    assert_eq!(stored.len(), 6);
    let mut want = payloads(&sent);
    want.sort();
    let mut got: Vec<Vec<u8>> = stored.iter().map(|r| r.payload.to_vec()).collect();
    got.sort();
    assert_eq!(got, want);
    assert!(stored.iter().all(|r| &*r.device_id == "sensor-1"));
    let values = stored[0].decode_values().unwrap();
    assert_eq!(values[0].0, "temperature");
    assert_eq!(values[1], ("humidity".into(), 40.25));

    // The readings endpoint, JSON and CSV.
    let r = env
        .admin(Method::GET, "/v1/devices/sensor-1/readings?limit=100", "")
        .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 6);
    let hexes: Vec<String> = arr
        .iter()
        .map(|x| x["payload_hex"].as_str().unwrap().to_string())
        .collect();
    for p in &want {
        assert!(hexes.contains(&hex::encode(p)));
    }
    let r = env
        .admin(
            Method::GET,
            "/v1/devices/sensor-1/readings?format=csv&limit=2",
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = String::from_utf8(r.body).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "device_id,msg_id,device_time_ms,received_ms,payload_hex,values"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[1].starts_with("sensor-1,"));
    assert!(lines[1].contains("temperature=") && lines[1].contains("humidity=40.25"));

    // Device list with counters.
    let r = env.admin(Method::GET, "/v1/devices", "").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v[0]["id"], "sensor-1");
    assert_eq!(v[0]["records_accepted"], 3);
    assert_eq!(v[0]["handshakes"], 1);
    assert_eq!(v[0]["active_sessions"], 1);
    assert!(v[0]["last_seen_ms"].as_u64().unwrap() > 0);

    let m = env.metrics().await;
    assert_eq!(metric(&m, "iotseal_records_accepted_total "), 3);
    assert_eq!(metric(&m, "iotseal_readings_stored_total "), 6);
    assert_eq!(
        metric(
            &m,
            &format!("iotseal_handshakes_total{{suite=\"{s}\",outcome=\"established\"}}")
        ),
        1
    );
    assert_eq!(metric(&m, "iotseal_active_sessions "), 1);
    assert!(metric(&m, "iotseal_tls_handshakes_total{outcome=\"ok\"}") >= 1);

    // Audit trail.
    env.gw().audit_settled().await;
    let ev = env.storage.events();
    assert_eq!(ev[0].event, "established");
    assert_eq!(ev[0].device_id.as_deref(), Some("sensor-1"));
    assert_eq!(ev[0].suite, s.to_string());
}

#[tokio::test]
async fn full_exchange_default_suite() {
    full_exchange(Suite::DEFAULT).await;
}

#[tokio::test]
async fn full_exchange_x25519_ed25519() {
    full_exchange(suite("x25519/ed25519/chacha20poly1305")).await;
}

#[tokio::test]
async fn full_exchange_pq_signature() {
    full_exchange(suite("x25519mlkem768/ed25519+mldsa65/aes256gcm")).await;
}

#[tokio::test]
async fn retransmissions_get_identical_bytes_and_replays_are_bounded() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let mut dev = env.device("d", suite("x25519/ed25519/aes128gcm")).await;
    let mut conn = env.conn().await;
    let mut hs = dev.handshake(&mut conn, 1).await;

    // A retransmitted M1 gets the same M2, a retransmitted M3 flight the same ack.
    let r = conn
        .post_binary("/v1/handshake", hs.m1.clone())
        .await
        .unwrap();
    assert_eq!((r.status, &r.body), (200, &hs.m2));
    let r = conn
        .post_binary("/v1/handshake", hs.flight.clone())
        .await
        .unwrap();
    assert_eq!((r.status, &r.body), (200, &hs.answer));
    assert_eq!(
        env.storage.all_readings().len(),
        1,
        "M3 readings stored once"
    );
    let _ = open_acks(&mut hs.session, &hs.answer);

    // A record batch, then the same bytes again: acknowledged again, stored once.
    let g = dev.readings(2);
    let body = framed(&seal_records(&mut hs.session, &[g]));
    let r = conn.post_binary("/v1/records", body.clone()).await.unwrap();
    assert_eq!(r.status, 200);
    let calls = env.storage.store_calls();
    let r2 = conn.post_binary("/v1/records", body.clone()).await.unwrap();
    assert_eq!(r2.status, 200, "a retransmission is acknowledged");
    let acks = open_acks(&mut hs.session, &r2.body);
    assert!(acked(&acks[0], 1));
    assert_eq!(env.storage.store_calls(), calls, "not stored again");
    assert_eq!(env.storage.all_readings().len(), 3);

    // Right away once more: the per-session replay-ack budget is spent.
    let r3 = conn.post_binary("/v1/records", body.clone()).await.unwrap();
    assert_eq!(r3.status, 409);
    assert_eq!(decode_alert(&r3.body), Some(Refusal::Replay));
    let m = env.metrics().await;
    assert_eq!(metric(&m, "iotseal_refusals_total{reason=\"replay\"}"), 2);
    assert_eq!(metric(&m, "iotseal_replay_acks_suppressed_total "), 1);
    assert_eq!(metric(&m, "iotseal_records_accepted_total "), 2);
}

#[tokio::test]
async fn tampered_and_unknown_session_records() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let mut dev = env.device("d", suite("x25519/ed25519/aes256gcm")).await;
    let mut conn = env.conn().await;
    let mut hs = dev.handshake(&mut conn, 0).await;

    let g = dev.readings(1);
    let mut rec = seal_records(&mut hs.session, &[g]).remove(0);
    let n = rec.len();
    rec[n - 20] ^= 1;
    let r = conn
        .post_binary("/v1/records", framed(&[rec]))
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(decode_alert(&r.body), Some(Refusal::AuthFailed));
    assert_eq!(r.body.len(), 2, "nothing but the alert");

    // Another session id.
    let g = dev.readings(1);
    let mut rec = seal_records(&mut hs.session, &[g]).remove(0);
    let sid = Header::peek_session_id(&rec).unwrap();
    rec[1..5].copy_from_slice(&sid.wrapping_add(1).to_be_bytes());
    let r = conn
        .post_binary("/v1/records", framed(&[rec]))
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(decode_alert(&r.body), Some(Refusal::UnknownSession));

    // Junk.
    let r = conn
        .post_binary("/v1/records", b"\x05hello".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(decode_alert(&r.body), Some(Refusal::Malformed));
    let r = conn
        .post_binary("/v1/handshake", b"\x09junk".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 400);

    let m = env.metrics().await;
    assert_eq!(metric(&m, "iotseal_refusals_total{reason=\"tamper\"}"), 1);
    assert_eq!(
        metric(&m, "iotseal_refusals_total{reason=\"unknown_session\"}"),
        1
    );
    assert!(env.storage.all_readings().is_empty());
}

#[tokio::test]
async fn mixed_batch_acks_good_records_only() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let mut dev = env.device("d", suite("x25519/ed25519/aes256gcm")).await;
    let mut conn = env.conn().await;
    let mut hs = dev.handshake(&mut conn, 0).await;
    let _ = open_acks(&mut hs.session, &hs.answer);
    let (a, b) = (dev.readings(1), dev.readings(1));
    let mut recs = seal_records(&mut hs.session, &[a, b]);
    let n = recs[0].len();
    recs[0][n - 1] ^= 0x80;
    let r = conn
        .post_binary("/v1/records", framed(&recs))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let acks = open_acks(&mut hs.session, &r.body);
    assert!(!acked(&acks[0], 0) && acked(&acks[0], 1), "{acks:?}");
    assert_eq!(env.storage.all_readings().len(), 1);
}

#[tokio::test]
async fn storage_failure_is_not_acknowledged() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let mut dev = env.device("d", suite("x25519/ed25519/aes256gcm")).await;
    let mut conn = env.conn().await;
    let mut hs = dev.handshake(&mut conn, 0).await;
    let _ = open_acks(&mut hs.session, &hs.answer);
    let body = framed(&seal_records(&mut hs.session, &[dev.readings(2)]));
    env.storage.dangerous_fail_stores(true);
    let r = conn.post_binary("/v1/records", body.clone()).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(decode_alert(&r.body), Some(Refusal::Busy));
    env.storage.dangerous_fail_stores(false);
    // The same bytes again are processed (they were never marked).
    let r = conn.post_binary("/v1/records", body).await.unwrap();
    assert_eq!(r.status, 200);
    let acks = open_acks(&mut hs.session, &r.body);
    assert!(acked(&acks[0], 0));
    assert_eq!(env.storage.all_readings().len(), 2);
}

#[tokio::test]
async fn revocation_ends_live_sessions_and_refuses_handshakes() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let s = suite("x25519/ed25519/aes256gcm");
    let mut dev = env.device("victim", s).await;
    let mut other = env.device("bystander", s).await;
    let mut conn = env.conn().await;
    let mut hs = dev.handshake(&mut conn, 0).await;
    let mut hs2 = other.handshake(&mut conn, 0).await;
    assert_eq!(env.gw().session_count(), 2);

    let r = env
        .admin(Method::POST, "/v1/devices/victim/revoke", "")
        .await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["sessions_ended"], 1);
    assert_eq!(env.gw().session_count(), 1);

    let body = framed(&seal_records(&mut hs.session, &[dev.readings(1)]));
    let r = conn.post_binary("/v1/records", body).await.unwrap();
    assert!(r.status == 404 || r.status == 410, "{}", r.status);
    // The other device is unaffected.
    let body = framed(&seal_records(&mut hs2.session, &[other.readings(1)]));
    let r = conn.post_binary("/v1/records", body).await.unwrap();
    assert_eq!(r.status, 200);

    // A new handshake gets M2 (the device is anonymous at M1) and is refused at M3.
    let (h, m1) = iotseal_proto::handshake::DeviceHandshake::start(dev.cfg.clone(), now()).unwrap();
    let r = conn.post_binary("/v1/handshake", m1).await.unwrap();
    assert_eq!(r.status, 200);
    let iotseal_proto::handshake::DeviceNext::Established(est) = h.handle(now(), &r.body).unwrap()
    else {
        panic!("retry")
    };
    let r = conn
        .post_binary("/v1/handshake", est.finish.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(decode_alert(&r.body), Some(Refusal::AuthFailed));

    let r = env.admin(Method::GET, "/v1/devices/victim", "").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["revoked"], true);
    assert!(
        env.storage
            .device("victim".into())
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    let m = env.metrics().await;
    assert!(metric(&m, "iotseal_refusals_total{reason=\"revoked\"}") >= 1);
    env.gw().audit_settled().await;
    assert!(env.storage.events().iter().any(|e| e.event == "revoked"));
}

#[tokio::test]
async fn sessions_per_device_are_bounded_and_close_ends_a_session() {
    let env = Env::start(&[SigAlg::Ed25519], |s| {
        s.limits.max_sessions_per_device = 1;
    })
    .await;
    let s = suite("x25519/ed25519/aes256gcm");
    let mut dev = env.device("d", s).await;
    let mut conn = env.conn().await;
    let mut first = dev.handshake(&mut conn, 0).await;
    let mut second = dev.handshake(&mut conn, 0).await;
    assert_eq!(env.gw().session_count(), 1);
    let body = framed(&seal_records(&mut first.session, &[dev.readings(1)]));
    let r = conn.post_binary("/v1/records", body).await.unwrap();
    assert_eq!(r.status, 404, "the oldest session was evicted");

    // Close.
    let _ = open_acks(&mut second.session, &second.answer);
    let mut rec = Vec::new();
    second
        .session
        .seal(now(), ContentType::Close, b"", &mut rec)
        .unwrap();
    let r = conn
        .post_binary("/v1/records", framed(&[rec]))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let acks = open_acks(&mut second.session, &r.body);
    assert!(acked(&acks[0], 0));
    assert_eq!(env.gw().session_count(), 0);
    env.gw().audit_settled().await;
    let ev: Vec<String> = env.storage.events().into_iter().map(|e| e.event).collect();
    assert_eq!(ev, ["established", "evicted", "established", "closed"]);
}

/// `limits.max_sessions` at its edge: the table never holds more, and a new session evicts
/// the least recently used one (not the one just used).
#[tokio::test]
async fn session_table_is_bounded_and_evicts_the_least_recently_used() {
    let clock = ManualClock::new();
    let env = Env::start_with_clock(
        &[SigAlg::Ed25519],
        |s| s.limits.max_sessions = 2,
        Some(clock.clone()),
    )
    .await;
    let s = suite("x25519/ed25519/aes256gcm");
    let mut conn = env.conn().await;
    let (mut a, mut b, mut c) = (
        env.device("a", s).await,
        env.device("b", s).await,
        env.device("c", s).await,
    );
    let mut ha = a.handshake(&mut conn, 0).await;
    clock.advance(Duration::from_millis(20));
    let mut hb = b.handshake(&mut conn, 0).await;
    clock.advance(Duration::from_millis(20));
    // `a` is used again: `b` is now the least recently used.
    let body = framed(&seal_records(&mut ha.session, &[a.readings(1)]));
    assert_eq!(
        conn.post_binary("/v1/records", body).await.unwrap().status,
        200
    );
    clock.advance(Duration::from_millis(20));
    let mut hc = c.handshake(&mut conn, 0).await;
    assert_eq!(env.gw().session_count(), 2, "never more than max_sessions");
    let body = framed(&seal_records(&mut hb.session, &[b.readings(1)]));
    assert_eq!(
        conn.post_binary("/v1/records", body).await.unwrap().status,
        404,
        "b was evicted"
    );
    for (h, d) in [(&mut ha, &mut a), (&mut hc, &mut c)] {
        let body = framed(&seal_records(&mut h.session, &[d.readings(1)]));
        assert_eq!(
            conn.post_binary("/v1/records", body).await.unwrap().status,
            200
        );
    }
    env.gw().audit_settled().await;
    let evicted: Vec<String> = env
        .storage
        .events()
        .into_iter()
        .filter(|e| e.event == "evicted")
        .map(|e| e.device_id.unwrap_or_default())
        .collect();
    assert_eq!(evicted, ["b"]);
}

/// `limits.max_connections` at its edge: the connection over the limit is closed before TLS
/// (counted as a `limit` refusal); once one closes, a new one is served.
/// Behind a layer-4 proxy (`proxy_protocol = true`): a connection without a PROXY v2 header
/// is closed; the address in the header is the one the per-address cap counts, so one client
/// behind the proxy cannot take the others' share.
#[tokio::test]
async fn proxy_protocol_v2_gives_the_client_address() {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let env = Env::start(&[SigAlg::Ed25519], |s| {
        s.proxy_protocol = true;
        s.limits.max_connections_per_ip = 1;
    })
    .await;
    let tls = tokio_rustls::TlsConnector::from(root_trusting_config(&env.cert_pem));
    let addr = env.gw().local_addr();
    let via_proxy = |client: Option<&str>| {
        let tls = tls.clone();
        let header = client.map(|c| {
            let src: std::net::SocketAddr = c.parse().unwrap();
            Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, (src, addr))
                .build()
                .unwrap()
        });
        async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            if let Some(h) = header {
                tcp.write_all(&h).await.unwrap();
            }
            tokio::time::timeout(
                Duration::from_secs(5),
                tls.connect("127.0.0.1".try_into().unwrap(), tcp),
            )
            .await
            .expect("answered, not left hanging")
        }
    };
    assert!(via_proxy(None).await.is_err(), "no header: closed");
    let mut a = via_proxy(Some("203.0.113.7:40000"))
        .await
        .expect("a client with a header is served");
    a.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = a.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The same client again: at its cap (1). Another client through the same proxy: served.
    assert!(via_proxy(Some("203.0.113.7:40001")).await.is_err());
    assert!(via_proxy(Some("203.0.113.8:40000")).await.is_ok());
    // (Read directly: the test client sends no PROXY header.)
    let m = env.gw().metrics().render();
    assert!(
        metric(&m, "iotseal_refusals_total{reason=\"limit_per_ip\"}") >= 1,
        "{m}"
    );
    assert!(
        metric(&m, "iotseal_refusals_total{reason=\"malformed\"}") >= 1,
        "{m}"
    );
}

/// One address at its own cap is refused before TLS while another address is still served
/// (no single source takes every slot: the connection hog of the threat model).
#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let env = Env::start(&[SigAlg::Ed25519], |s| {
        s.limits.max_connections = 10;
        s.limits.max_connections_per_ip = 2;
    })
    .await;
    let mut first = env.conn().await;
    let mut second = env.conn().await;
    for c in [&mut first, &mut second] {
        let r = c.request(Method::GET, "/healthz", &[], vec![]).await;
        assert_eq!(r.unwrap().status, 200);
    }
    let tls = tokio_rustls::TlsConnector::from(root_trusting_config(&env.cert_pem));
    let from = |ip: &str| {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let addr = env.gw().local_addr();
        let tls = tls.clone();
        async move {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind((ip, 0).into()).unwrap();
            let tcp = sock.connect(addr).await.unwrap();
            tokio::time::timeout(
                Duration::from_secs(5),
                tls.connect("127.0.0.1".try_into().unwrap(), tcp),
            )
            .await
            .expect("answered, not left hanging")
        }
    };
    assert!(
        from("127.0.0.1").await.is_err(),
        "a third connection from one address gets no TLS"
    );
    let other = from("127.0.0.2").await;
    assert!(other.is_ok(), "another address is served: {other:?}");
    let r = first.request(Method::GET, "/metrics", &[], vec![]).await;
    let m = String::from_utf8(r.unwrap().body).unwrap();
    assert!(
        metric(&m, "iotseal_refusals_total{reason=\"limit_per_ip\"}") >= 1,
        "{m}"
    );
    assert_eq!(metric(&m, "iotseal_refusals_total{reason=\"limit\"}"), 0);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_before_tls() {
    let env = Env::start(&[SigAlg::Ed25519], |s| s.limits.max_connections = 2).await;
    let mut first = env.conn().await;
    let mut second = env.conn().await;
    for c in [&mut first, &mut second] {
        let r = c.request(Method::GET, "/healthz", &[], vec![]).await;
        assert_eq!(r.unwrap().status, 200);
    }
    let tls = tokio_rustls::TlsConnector::from(root_trusting_config(&env.cert_pem));
    let tcp = tokio::net::TcpStream::connect(env.gw().local_addr())
        .await
        .unwrap();
    let third = tokio::time::timeout(
        Duration::from_secs(5),
        tls.connect("127.0.0.1".try_into().unwrap(), tcp),
    )
    .await
    .expect("closed, not left hanging");
    assert!(third.is_err(), "the third connection must not get TLS");
    let r = first.request(Method::GET, "/metrics", &[], vec![]).await;
    let m = String::from_utf8(r.unwrap().body).unwrap();
    assert!(
        metric(&m, "iotseal_refusals_total{reason=\"limit\"}") >= 1,
        "{m}"
    );
    drop(second);
    // The permit comes back when the server notices the close.
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tcp = tokio::net::TcpStream::connect(env.gw().local_addr())
            .await
            .unwrap();
        if tls
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .is_ok()
        {
            served = true;
            break;
        }
    }
    assert!(served, "a connection is served again once one closed");
}

/// `limits.audit_queue` at its edge: with the audit writer stuck, events beyond the queue are
/// dropped and counted, requests are never held up, and what was queued is written later.
#[tokio::test]
async fn a_full_audit_queue_drops_and_counts_events_without_blocking() {
    let env = Env::start(&[SigAlg::Ed25519], |s| s.limits.audit_queue = 2).await;
    let release = env.storage.dangerous_hold_events();
    let s = suite("x25519/ed25519/aes256gcm");
    let mut conn = env.conn().await;
    for i in 0..6 {
        let mut d = env.device(&format!("d{i}"), s).await;
        d.handshake(&mut conn, 0).await;
    }
    let m = env.metrics().await;
    let dropped = metric(&m, "iotseal_audit_events_dropped_total");
    // One event is in the stuck writer, two are queued: the other three were dropped.
    assert!((3..=4).contains(&dropped), "dropped {dropped}");
    assert!(env.storage.events().is_empty());
    release.send(true).unwrap();
    env.gw().audit_settled().await;
    let written = env.storage.events().len() as u64;
    assert_eq!(
        written + dropped,
        6,
        "every event written or counted as dropped"
    );
}

#[tokio::test]
async fn rotated_identity_keys_both_work() {
    let env = Env::start(&[SigAlg::Ed25519, SigAlg::Ed25519], |_| {}).await;
    let s = suite("x25519/ed25519/aes256gcm");
    let mut conn = env.conn().await;
    let mut old = env.device_pinning("old-pin", s, 0).await;
    let mut new = env.device_pinning("new-pin", s, 1).await;
    old.handshake(&mut conn, 1).await;
    new.handshake(&mut conn, 1).await;
    assert_eq!(env.storage.all_readings().len(), 2);
}

#[tokio::test]
async fn handshake_rate_limit_per_ip() {
    let env = Env::start(&[SigAlg::Ed25519], |s| {
        s.limits.handshake_rate_per_ip = 0.001;
        s.limits.handshake_burst_per_ip = 2.0;
    })
    .await;
    let s = suite("x25519/ed25519/aes256gcm");
    let dev = env.device("d", s).await;
    let mut conn = env.conn().await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (_, m1) =
            iotseal_proto::handshake::DeviceHandshake::start(dev.cfg.clone(), now()).unwrap();
        let r = conn.post_binary("/v1/handshake", m1).await.unwrap();
        if r.status == 429 {
            assert!(r.headers.contains_key("retry-after"));
            assert_eq!(decode_alert(&r.body), Some(Refusal::Busy));
        }
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200, 200, 429]);
    let m = env.metrics().await;
    assert_eq!(
        metric(&m, "iotseal_refusals_total{reason=\"rate_limited\"}"),
        1
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_without_being_read() {
    let env = Env::start(&[SigAlg::Ed25519], |s| s.limits.max_body = 4096).await;
    // Declared too large: answered before the body is sent.
    let tls = tokio_rustls::TlsConnector::from(root_trusting_config(&env.cert_pem));
    let tcp = tokio::net::TcpStream::connect(env.gw().local_addr())
        .await
        .unwrap();
    let mut s = tls
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    s.write_all(
        b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(t0.elapsed() < Duration::from_secs(2));

    // Declared too large (within the lingering budget) with `Expect: 100-continue`: 413
    // without `100 Continue` first, so the client never uploads the body.
    let tcp = tokio::net::TcpStream::connect(env.gw().local_addr())
        .await
        .unwrap();
    let mut s = tls
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    s.write_all(
        b"POST /v1/records HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 6000\r\n\r\n",
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(!head.contains("100 Continue"), "{head}");

    // Chunked (no length): cut off while streaming.
    let big = vec![0u8; 10_000];
    let r = env
        .client
        .request(
            Method::POST,
            "/v1/handshake",
            &[("transfer-encoding", "chunked")],
            big.clone(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(decode_alert(&r.body), Some(Refusal::Malformed));
    let r = env
        .client
        .request(Method::POST, "/v1/records", &[], big)
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    let m = env.metrics().await;
    assert_eq!(metric(&m, "iotseal_refusals_total{reason=\"oversize\"}"), 4);
}

/// A client that writes a whole body just over the limit before it reads (hyper's client
/// does) still gets the 413, not a connection reset: the gateway drains the rest first.
#[tokio::test]
async fn a_body_just_over_the_limit_is_answered_413_not_reset() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let max = iotseal_gateway::Settings::default().limits.max_body;
    for path in ["/v1/records", "/v1/handshake"].repeat(20) {
        let r = env
            .client
            .request(Method::POST, path, &[], vec![0x80; max + 1])
            .await
            .unwrap();
        assert_eq!(r.status, 413, "{path}");
        assert_eq!(decode_alert(&r.body), Some(Refusal::Malformed));
    }
    let m = env.metrics().await;
    assert_eq!(
        metric(&m, "iotseal_refusals_total{reason=\"oversize\"}"),
        40
    );
}

#[tokio::test]
async fn admin_requires_the_token() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        for (m, path) in [
            (Method::GET, "/v1/devices"),
            (Method::POST, "/v1/devices"),
            (Method::GET, "/v1/devices/x"),
            (Method::POST, "/v1/devices/x/revoke"),
            (Method::GET, "/v1/devices/x/readings"),
        ] {
            let r = env
                .client
                .request(m.clone(), path, &h, b"{}".to_vec())
                .await
                .unwrap();
            assert_eq!(r.status, 401, "{m} {path} {auth:?}");
            assert!(r.body.is_empty());
        }
    }
    let r = env.admin(Method::GET, "/v1/devices", "").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"[]"[..]));
    // Registration checks.
    let r = env
        .admin(
            Method::POST,
            "/v1/devices",
            r#"{"id":"a","alg":"ed25519","public_key":"00"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    let pk = "11".repeat(32);
    let body = format!(r#"{{"id":"a","alg":"ed25519","public_key":"{pk}"}}"#);
    assert_eq!(
        env.admin(Method::POST, "/v1/devices", &body).await.status,
        201
    );
    assert_eq!(
        env.admin(Method::POST, "/v1/devices", &body).await.status,
        409
    );
    let body = format!(r#"{{"id":"b","alg":"ed25519","public_key":"{pk}"}}"#);
    assert_eq!(
        env.admin(Method::POST, "/v1/devices", &body).await.status,
        409,
        "one key, one device"
    );
    assert_eq!(
        env.admin(Method::GET, "/v1/devices/nobody", "")
            .await
            .status,
        404
    );
    let m = env.metrics().await;
    assert_eq!(
        metric(&m, "iotseal_refusals_total{reason=\"unauthorized\"}"),
        20
    );
}

#[tokio::test]
async fn tls12_is_refused() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            iotseal_gateway::keys::first_cert_der(&env.cert_pem)
                .unwrap()
                .into(),
        )
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let c = iotseal_gateway::client::Client::new(&env.url, Some(Arc::new(cfg))).unwrap();
    let e = c.connect().await.unwrap_err();
    assert!(e.to_string().contains("TLS"), "{e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = env.metrics().await;
    assert!(metric(&m, "iotseal_tls_handshakes_total{outcome=\"failed\"}") >= 1);

    // A client offering only X25519 still connects (the fallback group).
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            iotseal_gateway::keys::first_cert_der(&env.cert_pem)
                .unwrap()
                .into(),
        )
        .unwrap();
    let p = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(p))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let c = iotseal_gateway::client::Client::new(&env.url, Some(Arc::new(cfg))).unwrap();
    let conn = c.connect().await.unwrap();
    assert_eq!(conn.key_exchange_group, Some(rustls::NamedGroup::X25519));

    // The pinned-certificate client (what `iotseal device` uses) connects too.
    let der = env.public.cert_der().unwrap();
    let c = iotseal_gateway::client::Client::new(
        &env.url,
        Some(iotseal_gateway::tls::pinned_client_config(&der).unwrap()),
    )
    .unwrap();
    assert_eq!(
        c.request(Method::GET, "/healthz", &[], vec![])
            .await
            .unwrap()
            .body,
        b"ok"
    );
    // ... and refuses another certificate.
    let other = iotseal_gateway::keys::self_signed_cert(&[]).unwrap();
    let der = iotseal_gateway::keys::first_cert_der(&other.cert_pem).unwrap();
    let c = iotseal_gateway::client::Client::new(
        &env.url,
        Some(iotseal_gateway::tls::pinned_client_config(&der).unwrap()),
    )
    .unwrap();
    assert!(c.connect().await.is_err());
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let checks = [
        (Method::GET, "/healthz", vec![], 200),
        (Method::GET, "/metrics", vec![], 200),
        (Method::GET, "/nowhere", vec![], 404),
        (Method::GET, "/v1/devices", vec![], 401),
        (Method::POST, "/v1/records", b"junk".to_vec(), 400),
        (Method::GET, "/v1/records", vec![], 405),
    ];
    for (m, path, body, status) in checks {
        let r = env
            .client
            .request(m.clone(), path, &[], body)
            .await
            .unwrap();
        assert_eq!(r.status, status, "{m} {path}");
        for (h, v) in [
            ("strict-transport-security", "max-age=31536000"),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'",
            ),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            assert_eq!(
                r.headers.get(h).map(|x| x.to_str().unwrap()),
                Some(v),
                "{path} {h}"
            );
        }
    }
    let r = env
        .client
        .request(Method::GET, "/healthz", &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.body, b"ok");
}

#[tokio::test]
async fn metrics_expose_every_name() {
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let mut dev = env.device("d", Suite::DEFAULT).await;
    let mut conn = env.conn().await;
    dev.handshake(&mut conn, 1).await;
    let m = env.metrics().await;
    for name in [
        "iotseal_handshakes_total{suite=",
        "iotseal_records_accepted_total ",
        "iotseal_readings_stored_total ",
        "iotseal_readings_duplicate_total ",
        "iotseal_active_sessions ",
        "iotseal_half_open_handshakes ",
        "iotseal_storage_commit_seconds_bucket{le=",
        "iotseal_storage_commit_seconds_count ",
        "iotseal_tls_handshakes_total{outcome=",
        "iotseal_http_requests_total{route=\"/v1/handshake\",status=\"200\"}",
    ] {
        assert!(m.contains(name), "missing {name}");
    }
    for reason in [
        "replay",
        "stale",
        "future",
        "tamper",
        "unknown",
        "revoked",
        "policy",
        "malformed",
        "unknown_session",
        "limit",
        "oversize",
        "rate_limited",
        "unauthorized",
    ] {
        assert!(
            m.contains(&format!("iotseal_refusals_total{{reason=\"{reason}\"}}")),
            "missing reason {reason}"
        );
    }
    assert!(
        m.lines()
            .all(|l| l.starts_with('#') || l.starts_with("iotseal_"))
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let env = Env::start(&[SigAlg::Ed25519], |s| {
        s.limits.header_read_timeout_secs = 1;
        s.limits.request_timeout_secs = 1;
    })
    .await;
    let tls = tokio_rustls::TlsConnector::from(root_trusting_config(&env.cert_pem));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(env.gw().local_addr())
            .await
            .unwrap();
        tls.connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap()
    };
    // Half the headers, then nothing: the connection is closed.
    let mut s = connect().await;
    s.write_all(b"POST /v1/records HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut buf = vec![0u8; 1024];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("cut off within the timeout");
    // Closed (read 0 or an error), perhaps after a short error answer.
    drop(r);
    assert!(t0.elapsed() >= Duration::from_millis(900));

    // Headers, half the body, then nothing: 408.
    let mut s = connect().await;
    s.write_all(b"POST /v1/records HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered within the timeout")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
}

/// `limits.tls_handshake_timeout_secs` at its edge: a connection that never starts TLS is
/// closed after the timeout and counted.
#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_timeout() {
    let env = Env::start(&[SigAlg::Ed25519], |s| {
        s.limits.tls_handshake_timeout_secs = 1
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(env.gw().local_addr())
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed within the timeout, not left open");
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "closed without an answer: {r:?}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(900));
    let m = env.metrics().await;
    assert_eq!(
        metric(&m, "iotseal_tls_handshakes_total{outcome=\"timeout\"}"),
        1
    );
}

#[tokio::test]
async fn plain_http_mode() {
    let env = Env::start(&[SigAlg::Ed25519], |s| s.plain_http = true).await;
    assert!(env.url.starts_with("http://"));
    let r = env
        .client
        .request(Method::GET, "/healthz", &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("strict-transport-security"));
    assert_eq!(r.headers["x-frame-options"], "DENY");
    let mut dev = env.device("d", suite("x25519/ed25519/aes256gcm")).await;
    let mut conn = env.conn().await;
    dev.handshake(&mut conn, 2).await;
    assert_eq!(env.storage.all_readings().len(), 2);
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let dev_key = KeyPair::generate().unwrap();
    let dev_cert = CertificateParams::new(vec!["device-1".to_string()])
        .unwrap()
        .signed_by(&dev_key, &issuer)
        .unwrap();

    let ca_pem = ca_cert.pem();
    let env = Env::start(&[SigAlg::Ed25519], move |s| {
        let p = s.base_dir.join("client-ca.pem");
        std::fs::write(&p, &ca_pem).unwrap();
        s.tls.client_ca = Some(p);
    })
    .await;
    assert!(
        env.client.connect().await.is_err() || {
            // TLS 1.3: the refusal may only show on the first request.
            let mut c = env.client.connect().await.unwrap();
            c.request(Method::GET, "/healthz", &[], vec![])
                .await
                .is_err()
        }
    );

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            iotseal_gateway::keys::first_cert_der(&env.cert_pem)
                .unwrap()
                .into(),
        )
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(iotseal_gateway::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![dev_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(dev_key.serialize_der().into()),
        )
        .unwrap();
    let c = iotseal_gateway::client::Client::new(&env.url, Some(Arc::new(cfg))).unwrap();
    let r = c
        .request(Method::GET, "/healthz", &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_stops() {
    let mut env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let mut dev = env.device("d", suite("x25519/ed25519/aes256gcm")).await;
    let mut conn = env.conn().await;
    dev.handshake(&mut conn, 1).await;
    let gw = env.gw.take().unwrap();
    let addr = gw.local_addr();
    tokio::time::timeout(Duration::from_secs(10), gw.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    let ev = env.storage.events();
    assert_eq!(ev.len(), 1, "the audit queue was written before stopping");
    assert!(
        env.storage
            .device("d".into())
            .await
            .unwrap()
            .unwrap()
            .last_seen_ms
            .is_some(),
        "last-seen flushed"
    );
}

#[tokio::test]
async fn curl_check() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("curl not on PATH: curl check skipped");
        return;
    }
    let env = Env::start(&[SigAlg::Ed25519], |_| {}).await;
    let cert = env.dir.path().join("tls-cert.pem");
    let url = env.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let ok = std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&cert)
            .arg(format!("{url}/healthz"))
            .output()
            .unwrap();
        let junk = std::process::Command::new("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
            .arg(&cert)
            .args([
                "--data-binary",
                "junk",
                "-H",
                "content-type: application/octet-stream",
            ])
            .arg(format!("{url}/v1/records"))
            .output()
            .unwrap();
        (ok, junk)
    })
    .await
    .unwrap();
    assert!(
        out.0.status.success(),
        "{}",
        String::from_utf8_lossy(&out.0.stderr)
    );
    assert_eq!(out.0.stdout, b"ok");
    let junk = out.1.stdout;
    let (body, code) = junk.split_at(junk.len() - 4);
    assert_eq!(code, b"\n400");
    assert_eq!(body, [0x7f, Refusal::Malformed as u8]);
    println!("curl check passed");
}

#[tokio::test]
async fn idle_sessions_expire() {
    let clock = ManualClock::new();
    let env = Env::start_with_clock(
        &[SigAlg::Ed25519],
        |s| {
            s.limits.idle_timeout_secs = 1;
            // The test sweeps (the background sweeper stays out of the way).
            s.limits.sweep_interval_secs = 3600;
        },
        Some(clock.clone()),
    )
    .await;
    let mut dev = env.device("d", suite("x25519/ed25519/aes256gcm")).await;
    let mut conn = env.conn().await;
    let mut hs = dev.handshake(&mut conn, 0).await;
    assert_eq!(env.gw().session_count(), 1);
    // Not idle long enough yet: kept.
    clock.advance(Duration::from_millis(900));
    env.gw().sweep().await;
    assert_eq!(env.gw().session_count(), 1, "swept before its idle timeout");
    clock.advance(Duration::from_millis(200));
    env.gw().sweep().await;
    assert_eq!(
        env.gw().session_count(),
        0,
        "not swept after its idle timeout"
    );
    let body = framed(&seal_records(&mut hs.session, &[dev.readings(1)]));
    let r = conn.post_binary("/v1/records", body).await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(decode_alert(&r.body), Some(Refusal::UnknownSession));
    env.gw().audit_settled().await;
    let ev: Vec<String> = env.storage.events().into_iter().map(|e| e.event).collect();
    assert_eq!(ev, ["established", "expired"]);
}

#[tokio::test]
async fn sqlite_storage_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = provider();
    let laid = iotseal_testkit::lay_out_gateway_dir(dir.path(), &p, &[SigAlg::Ed25519]).unwrap();
    let mut settings = laid.settings;
    settings.storage = "sqlite:data/iotseal.db".into();
    let gw = iotseal_gateway::Gateway::start(settings.clone())
        .await
        .unwrap();
    let client = iotseal_gateway::client::Client::new(
        gw.url(),
        Some(iotseal_gateway::tls::pinned_client_config(&laid.public.cert_der().unwrap()).unwrap()),
    )
    .unwrap();
    let key = iotseal_testkit::device_key(&p, SigAlg::Ed25519);
    let body = iotseal_testkit::registration_json("s1", SigAlg::Ed25519, &key.public_key());
    let auth = format!("Bearer {}", laid.admin_token);
    let r = client
        .request(
            Method::POST,
            "/v1/devices",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.into_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let pins = vec![iotseal_proto::handshake::PinnedKey {
        alg: SigAlg::Ed25519,
        public_key: hex::decode(&laid.public.identity[0].public_key).unwrap(),
    }];
    let mut cfg = iotseal_proto::handshake::DeviceConfig::new(p, b"s1".to_vec(), key, pins);
    cfg.offers = vec![Suite::DEFAULT];
    let mut dev = Device {
        cfg: Arc::new(cfg),
        id: "s1".into(),
        next_msg: 1,
    };
    let mut conn = client.connect().await.unwrap();
    let mut hs = dev.handshake(&mut conn, 3).await;
    let _ = open_acks(&mut hs.session, &hs.answer);
    let more = dev.readings(2);
    let body = framed(&seal_records(&mut hs.session, std::slice::from_ref(&more)));
    let r = conn.post_binary("/v1/records", body.clone()).await.unwrap();
    assert_eq!(r.status, 200);
    // Retransmitted: acknowledged, stored once.
    let r = conn.post_binary("/v1/records", body).await.unwrap();
    assert_eq!(r.status, 200);
    let r = client
        .request(
            Method::GET,
            "/v1/devices/s1/readings",
            &[("authorization", &auth)],
            vec![],
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    gw.stop().await.unwrap();

    // Everything is on disk after a restart.
    let gw = iotseal_gateway::Gateway::start(settings).await.unwrap();
    let s = gw.storage();
    assert_eq!(s.count_readings().await.unwrap(), 5);
    let d = s.device("s1".into()).await.unwrap().unwrap();
    assert!(d.last_seen_ms.is_some());
    let stored = s
        .readings(iotseal_gateway::storage::ReadingQuery {
            device_id: "s1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut want: Vec<String> = payloads(&hs.sent)
        .into_iter()
        .chain(payloads(&more))
        .map(hex::encode)
        .collect();
    want.sort();
    let mut got: Vec<String> = stored.into_iter().map(|r| r.payload_hex).collect();
    got.sort();
    assert_eq!(got, want);
    gw.stop().await.unwrap();
}

/// Idle sessions are parked at the sweep (`limits.park_after_secs`; 0 here: every session not
/// in use) and go on as before: the next records of a parked session are accepted and
/// acknowledged, across the device's key updates, and a replay is still refused.
#[tokio::test]
async fn parked_sessions_go_on_as_before() {
    let s = suite("x25519/ed25519/aes128gcm");
    let env = Env::start(&[s.sig], |st| {
        st.limits.park_after_secs = 0;
        // The test sweeps (the background sweeper stays out of the way).
        st.limits.sweep_interval_secs = 3600;
    })
    .await;
    let mut dev = env.device("parked-1", s).await;
    let mut conn = env.conn().await;
    let mut hs = dev.handshake(&mut conn, 1).await;
    // A sweep parks the (one) session: it is not in use.
    let mut parks = 0;
    let mut parked = async || {
        env.gw().sweep().await;
        let m = env.metrics().await;
        let n = metric(&m, "iotseal_sessions_parked_total ");
        assert_eq!(n, parks + 1, "the sweep parked the session");
        parks = n;
        assert_eq!(metric(&m, "iotseal_parked_sessions "), 1);
    };
    let mut last = Vec::new();
    for round in 0..3u64 {
        parked().await;
        let recs = seal_records(&mut hs.session, &[dev.readings(2), dev.readings(1)]);
        // The device updates its key between rounds: the parked gateway follows.
        hs.session.update_send_key(now()).unwrap();
        let r = conn
            .post_binary("/v1/records", framed(&recs))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "round {round}");
        let acks = open_acks(&mut hs.session, &r.body);
        assert_eq!(acks[0], vec![(0, 2 * round + 2)], "round {round}");
        last = recs;
    }
    assert_eq!(env.storage.all_readings().len(), 1 + 3 * 3);
    // A replay of the last batch, to a parked session: acknowledged, not stored again.
    parked().await;
    let r = conn
        .post_binary("/v1/records", framed(&last))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(env.storage.all_readings().len(), 10);
    assert!(
        metric(
            &env.metrics().await,
            "iotseal_refusals_total{reason=\"replay\"}"
        ) >= 2
    );
}
