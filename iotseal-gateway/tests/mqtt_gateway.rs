//! The MQTT binding against a real Mosquitto (`IOTSEAL_TEST_MQTT`, or `mosquitto` on PATH on
//! a free port; skipped otherwise): a device driven by the core talks to the gateway through
//! the broker with plain MQTT v5 requests, including QoS 1 redeliveries (the same message
//! twice), refusals and answers to topics the gateway must not publish to.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Device, Env, framed, now, open_acks, provider, seal_records};
use iotseal_gateway::{Gateway, Settings};
use iotseal_proto::handshake::messages::{Cookie, RetryReason};
use iotseal_proto::handshake::{DeviceEstablished, DeviceHandshake, DeviceNext};
use iotseal_proto::reading::encode_batch;
use iotseal_proto::record::{ContentType, Session, batch};
use iotseal_proto::{Refusal, SigAlg, Suite};
use iotseal_testkit::lay_out_gateway_dir;
use iotseal_testkit::mqtt::{TestBroker, TestClient};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};

const SUITE: &str = "x25519/ed25519/aes128gcm";

fn random_hex(n: usize) -> String {
    hex::encode(provider().random_vec(n).unwrap())
}

/// Points `s` at the broker with a fresh topic prefix and client id (tests share brokers).
fn use_broker(s: &mut Settings, b: &TestBroker, prefix: &str) {
    s.mqtt.broker = b.url();
    s.mqtt.topic_prefix = prefix.to_string();
    s.mqtt.client_id = format!("gw-{}", random_hex(6));
    s.mqtt.session_expiry_secs = 60;
}

/// A plain MQTT v5 client that publishes requests as devices do and reads their answers.
struct Raw(TestClient);

impl Raw {
    async fn connect(b: &TestBroker, subscribe: &[String]) -> Self {
        Self(
            b.client(format!("raw-{}", random_hex(6)), 1 << 20, subscribe)
                .await,
        )
    }

    /// Publishes a request with QoS 1, as devices do.
    async fn publish(&self, topic: &str, payload: &[u8], reply_to: Option<&str>, corr: &[u8]) {
        self.publish_with(QoS::AtLeastOnce, topic, payload, reply_to, corr)
            .await;
    }

    /// Publishes with QoS 0 (at most once), as a device that does not want acknowledgements
    /// from the broker would.
    async fn publish_qos0(&self, topic: &str, payload: &[u8], reply_to: &str, corr: &[u8]) {
        self.publish_with(QoS::AtMostOnce, topic, payload, Some(reply_to), corr)
            .await;
    }

    async fn publish_with(
        &self,
        qos: QoS,
        topic: &str,
        payload: &[u8],
        reply_to: Option<&str>,
        corr: &[u8],
    ) {
        let props = PublishProperties {
            response_topic: reply_to.map(str::to_string),
            correlation_data: Some(Bytes::copy_from_slice(corr)),
            ..Default::default()
        };
        self.0
            .client
            .publish_bytes_with_properties(
                topic,
                qos,
                false,
                Bytes::copy_from_slice(payload),
                props,
            )
            .await
            .unwrap();
    }

    async fn next(&mut self, within: Duration) -> Option<Publish> {
        self.0.next(within).await
    }

    /// The next answer, checked to carry `corr`.
    async fn answer(&mut self, corr: &[u8]) -> Vec<u8> {
        let p = self
            .next(Duration::from_secs(10))
            .await
            .expect("an answer from the gateway");
        let c = p.properties.and_then(|pp| pp.correlation_data);
        assert_eq!(c.as_deref(), Some(corr), "correlation data echoed");
        p.payload.to_vec()
    }
}

/// Runs a handshake through the broker; M3 carries `piggyback` readings and is published
/// twice (a QoS 1 redelivery): both answers must be the same bytes.
async fn handshake(
    raw: &mut Raw,
    prefix: &str,
    inbox: &str,
    dev: &mut Device,
    piggyback: usize,
) -> (Session, Vec<u64>) {
    let hs_topic = format!("{prefix}/hs/me");
    let (hs, m1) = DeviceHandshake::start(dev.cfg.clone(), now()).unwrap();
    raw.publish(&hs_topic, &m1, Some(inbox), b"m1").await;
    let mut next = hs.handle(now(), &raw.answer(b"m1").await).unwrap();
    let est: DeviceEstablished = loop {
        match next {
            DeviceNext::Retry { handshake, hello } => {
                raw.publish(&hs_topic, &hello, Some(inbox), b"m1'").await;
                next = handshake.handle(now(), &raw.answer(b"m1'").await).unwrap();
            }
            DeviceNext::Established(e) => break *e,
        }
    };
    let mut session = est.session;
    let mut flight = est.finish.clone();
    let rs = dev.readings(piggyback);
    let mut rec = Vec::new();
    session
        .seal(now(), ContentType::Data, &encode_batch(&rs), &mut rec)
        .unwrap();
    batch::push(&mut flight, &rec);
    raw.publish(&hs_topic, &flight, Some(inbox), b"m3").await;
    let a1 = raw.answer(b"m3").await;
    raw.publish(&hs_topic, &flight, Some(inbox), b"m3").await;
    let a2 = raw.answer(b"m3").await;
    assert_eq!(a1, a2, "a redelivered M3 gets the cached answer");
    let acks = open_acks(&mut session, &a1);
    assert!(common::acked(&acks[0], 0), "M3's record acknowledged");
    (session, rs.iter().map(|r| r.msg_id).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_qos1_redelivered_requests_are_stored_once() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let prefix = format!("t{}/iotseal", random_hex(4));
    let env = Env::start(&[SigAlg::Ed25519], |s| use_broker(s, &broker, &prefix)).await;
    let inbox = format!("{prefix}/inbox/me");
    let mut raw = Raw::connect(&broker, std::slice::from_ref(&inbox)).await;
    let mut dev = env
        .device("mqtt-dev-1", SUITE.parse::<Suite>().unwrap())
        .await;
    let (mut session, mut ids) = handshake(&mut raw, &prefix, &inbox, &mut dev, 3).await;

    // Two records of five readings, published twice (as a broker redelivers QoS 1).
    let groups = vec![dev.readings(5), dev.readings(5)];
    ids.extend(groups.iter().flatten().map(|r| r.msg_id));
    let body = framed(&seal_records(&mut session, &groups));
    let rec_topic = format!("{prefix}/rec/me");
    raw.publish(&rec_topic, &body, Some(&inbox), b"r1").await;
    let a1 = raw.answer(b"r1").await;
    let acks = open_acks(&mut session, &a1);
    assert!(common::acked(&acks[0], 1) && common::acked(&acks[0], 2));
    raw.publish(&rec_topic, &body, Some(&inbox), b"r2").await;
    let a2 = raw.answer(b"r2").await;
    // The replay is answered with an ack built from the window (same ranges), nothing stored.
    let acks = open_acks(&mut session, &a2);
    assert!(common::acked(&acks[0], 1) && common::acked(&acks[0], 2));

    let stored: Vec<u64> = env
        .storage
        .all_readings()
        .into_iter()
        .filter(|r| &*r.device_id == "mqtt-dev-1")
        .map(|r| r.msg_id)
        .collect();
    let mut sorted = stored.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), stored.len(), "no reading stored twice");
    ids.sort_unstable();
    assert_eq!(sorted, ids, "every reading stored");
    let m = env.metrics().await;
    assert!(
        common::metric(&m, "iotseal_refusals_total{reason=\"replay\"}") >= 1,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_refusals_are_alerts_and_foreign_topics_get_nothing() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let prefix = format!("t{}/iotseal", random_hex(4));
    let _env = Env::start(&[SigAlg::Ed25519], |s| {
        use_broker(s, &broker, &prefix);
        // The receive maximum at a small edge: a burst beyond it waits at the broker.
        s.mqtt.max_in_flight = 2;
    })
    .await;
    let inbox = format!("{prefix}/inbox/me");
    let elsewhere = format!("{prefix}/elsewhere");
    // Just over the response-topic bound (256 bytes): never answered.
    let too_long = format!("{prefix}/inbox/{}", "x".repeat(257 - prefix.len() - 7));
    assert_eq!(too_long.len(), 257);
    let mut raw = Raw::connect(
        &broker,
        &[inbox.clone(), elsewhere.clone(), too_long.clone()],
    )
    .await;
    let rec_topic = format!("{prefix}/rec/me");

    // Not a batch: Malformed.
    raw.publish(&rec_topic, &[0xff, 0xff, 0xff], Some(&inbox), b"1")
        .await;
    assert_eq!(raw.answer(b"1").await, [0x7f, Refusal::Malformed as u8]);
    // Correlation data at its bound (64 bytes) is echoed; one byte over is not (the request
    // is still answered, without it).
    raw.publish(&rec_topic, &[0xff], Some(&inbox), &[7; 64])
        .await;
    assert_eq!(raw.answer(&[7; 64]).await, [0x7f, Refusal::Malformed as u8]);
    raw.publish(&rec_topic, &[0xff], Some(&inbox), &[8; 65])
        .await;
    let p = raw
        .next(Duration::from_secs(10))
        .await
        .expect("answered without correlation data");
    assert_eq!(&p.payload[..], [0x7f, Refusal::Malformed as u8]);
    assert_eq!(p.properties.and_then(|pp| pp.correlation_data), None);
    // A well-formed record of a session that does not exist: UnknownSession.
    let mut rec = vec![0x80, 1, 2, 3, 4, 0, 0];
    rec.extend([0u8; 24]);
    raw.publish(&rec_topic, &framed(&[rec]), Some(&inbox), b"2")
        .await;
    assert_eq!(
        raw.answer(b"2").await,
        [0x7f, Refusal::UnknownSession as u8]
    );
    // A hello that is not one.
    raw.publish(
        &format!("{prefix}/hs/me"),
        &[0x01, 0, 0],
        Some(&inbox),
        b"3",
    )
    .await;
    assert_eq!(raw.answer(b"3").await, [0x7f, Refusal::Malformed as u8]);

    // 20 requests at once against `max_in_flight = 2`: every one is answered, none lost.
    for i in 0..20u8 {
        raw.publish(&rec_topic, &[0xff, i], Some(&inbox), &[100 + i])
            .await;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 20 {
        let p = raw
            .next(Duration::from_secs(10))
            .await
            .expect("every request of the burst answered");
        assert_eq!(&p.payload[..], [0x7f, Refusal::Malformed as u8]);
        let c = p.properties.and_then(|pp| pp.correlation_data).unwrap();
        assert!(seen.insert(c[0]), "answered once");
    }
    assert_eq!(seen, (100..120).collect());

    // Answers go only to PREFIX/inbox/ONE-LEVEL: a request naming another topic, or none,
    // is not answered at all.
    for (i, to) in [
        Some(elsewhere.as_str()),
        Some(&*format!("{prefix}/inbox/a/b")),
        Some(&*format!("{prefix}/hs/me")),
        Some(too_long.as_str()),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        raw.publish(&rec_topic, &[0xff], to, &[i as u8]).await;
    }
    assert!(
        raw.next(Duration::from_secs(2)).await.is_none(),
        "nothing published to foreign topics or the inbox"
    );
}

/// The gateway's broker session persists: a request published while the gateway is stopped
/// is delivered and answered when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_requests_wait_at_the_broker_while_the_gateway_is_away() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let prefix = format!("t{}/iotseal", random_hex(4));
    let dir = tempfile::tempdir().unwrap();
    let laid = lay_out_gateway_dir(dir.path(), &provider(), &[SigAlg::Ed25519]).unwrap();
    let mut settings = laid.settings;
    use_broker(&mut settings, &broker, &prefix);
    let gw = Gateway::start(settings.clone()).await.unwrap();
    gw.stop().await.unwrap();

    let inbox = format!("{prefix}/inbox/me");
    let mut raw = Raw::connect(&broker, std::slice::from_ref(&inbox)).await;
    let p = provider();
    let key = iotseal_testkit::device_key(&p, SigAlg::Ed25519);
    let pins = laid
        .public
        .identity
        .iter()
        .map(|i| iotseal_proto::handshake::PinnedKey {
            alg: i.alg,
            public_key: hex::decode(&i.public_key).unwrap(),
        })
        .collect();
    let mut cfg = iotseal_proto::handshake::DeviceConfig::new(p, b"away".to_vec(), key, pins);
    cfg.offers = vec![SUITE.parse().unwrap()];
    let (hs, m1) = DeviceHandshake::start(std::sync::Arc::new(cfg), now()).unwrap();
    raw.publish(&format!("{prefix}/hs/me"), &m1, Some(&inbox), b"q")
        .await;
    assert!(raw.next(Duration::from_millis(500)).await.is_none());

    let gw = Gateway::start(settings).await.unwrap();
    let m2 = raw.answer(b"q").await;
    assert!(
        matches!(hs.handle(now(), &m2), Ok(DeviceNext::Established(_))),
        "the queued hello was answered with a valid M2"
    );
    gw.stop().await.unwrap();
}

/// `mqtt.qos0_in_flight` at its edge (1): QoS 0 requests are not covered by the receive
/// maximum, so a burst of them beyond the bound is dropped (QoS 0 is at most once) and each
/// drop counted as `refusals_total{reason="busy"}`. Every request is either answered once or
/// counted, and the gateway answers again once the burst is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_qos0_requests_beyond_their_bound_are_dropped_and_counted() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    // A post-quantum signature makes each hello cost the gateway real work.
    let suite: Suite = "x25519mlkem768/ed25519+mldsa65/aes128gcm".parse().unwrap();
    let prefix = format!("t{}/iotseal", random_hex(4));
    let env = Env::start(&[suite.sig], |s| {
        use_broker(s, &broker, &prefix);
        s.mqtt.qos0_in_flight = 1;
        s.limits.handshake_rate_per_ip = 1e6;
        s.limits.handshake_burst_per_ip = 1e6;
    })
    .await;
    let inbox = format!("{prefix}/inbox/me");
    let mut raw = Raw::connect(&broker, std::slice::from_ref(&inbox)).await;
    let dev = env.device("mqtt-qos0", suite).await;
    let hs_topic = format!("{prefix}/hs/me");
    let busy = "iotseal_refusals_total{reason=\"busy\"}";

    const BURST: u8 = 40;
    let mut dropped_total = 0;
    for round in 0..5u8 {
        let hellos: Vec<Vec<u8>> = (0..BURST)
            .map(|_| DeviceHandshake::start(dev.cfg.clone(), now()).unwrap().1)
            .collect();
        let before = common::metric(&env.metrics().await, busy);
        for (i, m1) in hellos.iter().enumerate() {
            raw.publish_qos0(&hs_topic, m1, &inbox, &[round, i as u8])
                .await;
        }
        // Every request is answered or dropped and counted; nothing is answered twice.
        let mut answered = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let dropped = loop {
            let dropped = common::metric(&env.metrics().await, busy) - before;
            if answered.len() as u64 + dropped == u64::from(BURST) {
                break dropped;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: {} answered + {dropped} dropped of {BURST}",
                answered.len()
            );
            if let Some(p) = raw.next(Duration::from_millis(200)).await {
                let c = p.properties.and_then(|pp| pp.correlation_data).unwrap();
                assert_eq!(c[0], round, "an answer from this round");
                assert!(answered.insert(c[1]), "answered once");
            }
        };
        assert!(
            raw.next(Duration::from_millis(300)).await.is_none(),
            "nothing more"
        );
        println!(
            "round {round}: {} answered, {dropped} dropped",
            answered.len()
        );
        assert!(
            !answered.is_empty(),
            "round {round}: the slot serves requests"
        );
        dropped_total += dropped;
        if dropped > 0 {
            break;
        }
    }
    assert!(
        dropped_total > 0,
        "bursts of {BURST} QoS 0 hellos against one slot never hit the bound"
    );

    // The slot is free again: a lone QoS 0 request is answered.
    let (_, m1) = DeviceHandshake::start(dev.cfg.clone(), now()).unwrap();
    raw.publish_qos0(&hs_topic, &m1, &inbox, b"after").await;
    assert!(!raw.answer(b"after").await.is_empty());
}

/// Return routability over MQTT (docs/protocol.md §17): under load (cookie threshold 0) a
/// first hello gets Retry(Address) bound to its response topic's client level; the retried
/// hello is admitted when it asks for its answer at the same inbox, and refused AuthFailed
/// (bad cookie) when it names another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_address_retry_is_bound_to_the_response_topic() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let prefix = format!("t{}/iotseal", random_hex(4));
    let env = Env::start(&[SigAlg::Ed25519], |s| {
        use_broker(s, &broker, &prefix);
        s.limits.half_open_cookie_threshold = 0;
    })
    .await;
    let (inbox, other) = (format!("{prefix}/inbox/me"), format!("{prefix}/inbox/else"));
    let mut raw = Raw::connect(&broker, &[inbox.clone(), other.clone()]).await;
    let mut dev = env
        .device("mqtt-dev-addr", SUITE.parse::<Suite>().unwrap())
        .await;

    // The retried hello names another inbox: its cookie is not for that source.
    let hs_topic = format!("{prefix}/hs/me");
    let (hs, m1) = DeviceHandshake::start(dev.cfg.clone(), now()).unwrap();
    raw.publish(&hs_topic, &m1, Some(&inbox), b"a1").await;
    let retry = raw.answer(b"a1").await;
    assert_eq!(
        Cookie::from_retry_message(&retry).unwrap().reason,
        RetryReason::Address
    );
    let DeviceNext::Retry { hello, .. } = hs.handle(now(), &retry).unwrap() else {
        panic!("a retry taken as M2")
    };
    raw.publish(&hs_topic, &hello, Some(&other), b"a2").await;
    assert_eq!(
        raw.answer(b"a2").await,
        [0x7f, 0x02],
        "AuthFailed: bad cookie"
    );

    // Answered at the same inbox, the whole handshake completes (the helper follows the
    // retry) and M3's reading is stored.
    let (_session, ids) = handshake(&mut raw, &prefix, &inbox, &mut dev, 1).await;
    assert!(
        env.storage
            .all_readings()
            .iter()
            .any(|r| &*r.device_id == "mqtt-dev-addr" && r.msg_id == ids[0])
    );
    let m = env.metrics().await;
    assert!(
        common::metric(
            &m,
            "iotseal_handshakes_total{suite=\"none\",outcome=\"retry_address\"}"
        ) >= 2,
        "{m}"
    );
}
