//! End to end over MQTT: devices (the SDK's `MqttTransport`) reach a real gateway (in this
//! process, SQLite) through a real Mosquitto: the one `IOTSEAL_TEST_MQTT` names, or a
//! `mosquitto` on PATH started on a free port; otherwise each test says it was skipped.
//! Every reading is checked in storage byte for byte, and a plain subscriber on `#` checks
//! that the broker carries nothing readable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotseal_device::sim::{Impairments, Scenario, Simulation, Summary, TransportKind};
use iotseal_device::{
    AdminClient, DeviceClient, DeviceOptions, GatewayPins, IdentityFile, IdentityFileExt,
    MqttConfig, MqttTransport,
};
use iotseal_gateway::local::{LocalGateway, start_local};
use iotseal_proto::SigAlg;
use iotseal_proto::reading::SensorKind;
use iotseal_testkit::mqtt::TestBroker;
use iotseal_testkit::{random_hex, temp_dir};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;

fn pins(gw: &LocalGateway) -> GatewayPins {
    toml::from_str(&gw.public.to_toml().unwrap()).unwrap()
}

/// A local gateway with its MQTT binding on `broker` under a fresh topic prefix.
async fn gateway(dir: &std::path::Path, broker: &TestBroker) -> (LocalGateway, String) {
    let prefix = format!("t{}/iotseal", random_hex(4));
    let p = prefix.clone();
    let url = broker.url();
    let gw = start_local(dir, move |s| {
        s.mqtt.broker = url;
        s.mqtt.topic_prefix = p;
        s.mqtt.client_id = format!("gw-{}", random_hex(6));
        s.mqtt.session_expiry_secs = 60;
    })
    .await
    .unwrap();
    (gw, prefix)
}

fn mqtt_scenario(mut sc: Scenario, broker: &TestBroker, prefix: &str) -> Scenario {
    sc.transport = TransportKind::Mqtt;
    sc.mqtt.broker = broker.url();
    sc.mqtt.topic_prefix = prefix.to_string();
    sc
}

fn assert_complete(s: &Summary) {
    assert!(s.readings_sent > 0);
    assert_eq!(s.lost, 0, "{s:#?}");
    assert_eq!(s.duplicates, 0, "{s:#?}");
    assert_eq!(s.readings_verified, s.readings_sent, "{s:#?}");
    assert_eq!(s.readings_stored, s.readings_sent, "{s:#?}");
}

/// Classical, hybrid and post-quantum groups (both providers) over MQTT through Mosquitto:
/// every reading stored once, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_fleet_through_mosquitto_stores_every_reading_once() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let dir = temp_dir("fleet");
    let (gw, prefix) = gateway(&dir, &broker).await;
    let sc = mqtt_scenario(Scenario::mixed(2, 4.0, 3), &broker, &prefix);
    let sim = Simulation::new(sc, pins(&gw), &gw.token, "").unwrap();
    let s = sim.run().await.unwrap();
    assert_complete(&s);
    assert_eq!(s.groups.len(), 5);
    for g in &s.groups {
        assert!(g.handshakes >= 2, "{g:?}");
    }
    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Lost requests and lost answers over MQTT (the gateway stored the readings but the device
/// never heard back), reboots: the SDK retransmits, every reading is still stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_impaired_network_still_delivers_everything_once() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let dir = temp_dir("lossy");
    let (gw, prefix) = gateway(&dir, &broker).await;
    let mut sc = mqtt_scenario(Scenario::mixed(2, 4.0, 11), &broker, &prefix);
    sc.groups.truncate(2);
    sc.network = Impairments {
        latency_ms: 2,
        jitter_ms: 5,
        drop_request: 0.15,
        drop_response: 0.15,
        disconnect: 0.1,
    };
    let sim = Simulation::new(sc, pins(&gw), &gw.token, "").unwrap();
    let s = sim.run().await.unwrap();
    assert_complete(&s);
    let retries: u64 = s.groups.iter().map(|g| g.retries).sum();
    assert!(retries > 0, "the impairments caused retries: {s:#?}");
    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Everything the broker carries, as a plain subscriber on `#` sees it.
#[derive(Default)]
struct Seen {
    messages: usize,
    topics: Vec<String>,
    /// Topic, payload, response topic, correlation data, user properties of every message.
    bytes: Vec<u8>,
}

impl Seen {
    fn add(&mut self, p: &Publish) {
        self.messages += 1;
        self.topics
            .push(String::from_utf8_lossy(&p.topic).into_owned());
        self.bytes.extend_from_slice(&p.topic);
        self.bytes.extend_from_slice(&p.payload);
        if let Some(pp) = &p.properties {
            if let Some(t) = &pp.response_topic {
                self.bytes.extend_from_slice(t.as_bytes());
            }
            if let Some(c) = &pp.correlation_data {
                self.bytes.extend_from_slice(c);
            }
            for (k, v) in &pp.user_properties {
                self.bytes.extend_from_slice(k.as_bytes());
                self.bytes.extend_from_slice(v.as_bytes());
            }
            if let Some(ct) = &pp.content_type {
                self.bytes.extend_from_slice(ct.as_bytes());
            }
        }
    }
}

/// A plain subscriber on `#` sees only ciphertext: neither a distinctive reading payload nor
/// the device id appears in anything the broker carried (topics, payloads, properties).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_broker_sees_only_ciphertext() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let dir = temp_dir("cipher");
    let (gw, prefix) = gateway(&dir, &broker).await;

    // The eavesdropper: subscribed to everything before the device starts.
    let mut spy = broker
        .client(
            format!("spy-{}", random_hex(6)),
            1 << 20,
            &["#".to_string()],
        )
        .await;

    // A device with a distinctive id and payload.
    let device_id = format!("canary-device-{}", random_hex(4));
    let canary = format!("PLAINTEXT-CANARY-{}", random_hex(8));
    let pins = pins(&gw);
    let p = iotseal_crypto_awslc::default_provider();
    let identity = IdentityFile::generate(&p, &device_id, SigAlg::Ed25519).unwrap();
    let admin = AdminClient::new(&pins, &gw.token).unwrap();
    admin
        .add_device(&device_id, SigAlg::Ed25519, &identity.public_key)
        .await
        .unwrap();
    let cfg = MqttConfig {
        topic_prefix: prefix.clone(),
        ..MqttConfig::new(&broker.url())
    };
    let transport = MqttTransport::connect(&cfg).await.unwrap();
    let inbox = transport.inbox().to_string();
    let mut device = DeviceClient::new(
        identity.device_config(&pins, None).unwrap(),
        transport,
        DeviceOptions::default(),
    );
    // The first flush rides on the handshake (M3), the second is a records request.
    for round in 0..2 {
        for i in 0..5 {
            device
                .push(
                    vec![(SensorKind::Temperature, 21.5 + i as f32)],
                    format!("{canary}-{round}-{i}").into_bytes(),
                )
                .unwrap();
        }
        let r = device.flush().await.unwrap();
        assert_eq!(r.acknowledged, 5);
    }
    // The spy gets every message the broker carried: wait until it has the last ones (the
    // record request and the three answers: M2, the ack of M3 and its records, the records'
    // ack), then take whatever else is queued.
    let mut seen = Seen::default();
    let rec_prefix = format!("{prefix}/rec/");
    while seen
        .topics
        .iter()
        .filter(|t| t.starts_with(&rec_prefix))
        .count()
        < 1
        || seen.topics.iter().filter(|t| **t == inbox).count() < 3
    {
        let Ok(p) = tokio::time::timeout(Duration::from_secs(10), spy.received.recv()).await else {
            panic!(
                "the spy did not see every request and answer: {:?} (inbox {inbox})",
                seen.topics
            );
        };
        let p = p.expect("spy connected");
        seen.add(&p);
    }
    while let Ok(p) = spy.received.try_recv() {
        seen.add(&p);
    }
    drop(spy);

    // The readings were stored (decrypted by the gateway), canary and all.
    let stored = admin.readings(&device_id).await.unwrap();
    assert_eq!(stored.len(), 10);
    assert!(
        stored.iter().all(
            |r| String::from_utf8_lossy(&hex::decode(&r.payload_hex).unwrap()).contains(&canary)
        )
    );

    let hs = format!("{prefix}/hs/");
    let rec = format!("{prefix}/rec/");
    assert!(
        seen.topics.iter().any(|t| t.starts_with(&hs)),
        "{:?}",
        seen.topics
    );
    assert!(
        seen.topics.iter().any(|t| t.starts_with(&rec)),
        "{:?}",
        seen.topics
    );
    assert!(seen.topics.contains(&inbox), "{:?}", seen.topics);
    assert!(
        seen.messages >= 6,
        "M1, M2, M3, its ack, records, their ack"
    );
    let contains = |needle: &[u8]| seen.bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(canary.as_bytes()),
        "a reading's payload crossed the broker in clear"
    );
    assert!(
        !contains(b"PLAINTEXT-CANARY"),
        "part of a payload crossed in clear"
    );
    assert!(
        !contains(device_id.as_bytes()),
        "the device id crossed the broker in clear"
    );
    assert!(
        !contains(b"canary-device"),
        "part of the device id crossed in clear"
    );

    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// Throughput, HTTPS vs MQTT against the same gateway: `DEVICES` devices each deliver
/// `ROUNDS` flushes of 100 readings (one record each). Run by hand:
/// `cargo test --release -p iotseal-device --test mqtt_e2e -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn mqtt_throughput_vs_https() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    const DEVICES: usize = 32;
    const ROUNDS: usize = 50;
    let dir = temp_dir("tput");
    let (gw, prefix) = gateway(&dir, &broker).await;
    let pins = pins(&gw);
    let admin = AdminClient::new(&pins, &gw.token).unwrap();
    for transport in [TransportKind::Http, TransportKind::Mqtt] {
        let mut devices = Vec::new();
        for i in 0..DEVICES {
            let id = format!("tput-{transport:?}-{i}");
            let p = iotseal_crypto_awslc::default_provider();
            let identity = IdentityFile::generate(&p, &id, SigAlg::Ed25519).unwrap();
            admin
                .add_device(&id, SigAlg::Ed25519, &identity.public_key)
                .await
                .unwrap();
            let cfg = identity
                .device_config_with(
                    p,
                    &pins,
                    Some(vec!["x25519/ed25519/aes128gcm".parse().unwrap()]),
                )
                .unwrap();
            let t: Arc<dyn iotseal_device::Transport> = match transport {
                TransportKind::Http => {
                    Arc::new(iotseal_device::HttpsTransport::new(&pins).unwrap())
                }
                TransportKind::Mqtt => Arc::new(
                    MqttTransport::connect(&MqttConfig {
                        topic_prefix: prefix.clone(),
                        ..MqttConfig::new(&broker.url())
                    })
                    .await
                    .unwrap(),
                ),
            };
            devices.push(DeviceClient::new(cfg, t, DeviceOptions::default()));
        }
        let start = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for mut d in devices {
            tasks.spawn(async move {
                let mut lat = Vec::new();
                for _ in 0..ROUNDS {
                    for i in 0..100 {
                        d.push(vec![(SensorKind::Temperature, i as f32)], vec![0u8; 16])
                            .unwrap();
                    }
                    let t0 = std::time::Instant::now();
                    d.flush().await.unwrap();
                    lat.push(t0.elapsed().as_micros() as u64);
                }
                lat
            });
        }
        let mut lat = Vec::new();
        while let Some(r) = tasks.join_next().await {
            lat.extend(r.unwrap());
        }
        let secs = start.elapsed().as_secs_f64();
        lat.sort_unstable();
        let q = |f: f64| lat[((lat.len() - 1) as f64 * f) as usize] as f64 / 1000.0;
        println!(
            "{transport:?}: {} readings in {secs:.2} s = {:.0} readings/s; flush p50 {:.2} ms, p99 {:.2} ms",
            DEVICES * ROUNDS * 100,
            (DEVICES * ROUNDS * 100) as f64 / secs,
            q(0.5),
            q(0.99),
        );
    }
    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// `iotseal bench load --transport mqtt` in short: synthetic devices through the broker to the
/// gateway's MQTT binding; every request acknowledged, none failed, and the acknowledged
/// readings are in storage, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_bench_load_is_acknowledged() {
    use iotseal_bench::load::{self, LoadConfig, LoadTransport, Target};
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let dir = temp_dir("load");
    let (gw, prefix) = gateway(&dir, &broker).await;
    let pins = pins(&gw);
    let dev_prefix = format!("ml{}-", random_hex(3));
    let mut cfg = LoadConfig::new(
        Target::Gateway {
            pins: pins.clone(),
            token: gw.token.clone(),
            suite: "x25519/ed25519/aes256gcm".parse().unwrap(),
            prefix: Some(dev_prefix.clone()),
        },
        2,
    );
    cfg.transport = LoadTransport::Mqtt(MqttConfig {
        topic_prefix: prefix.clone(),
        ..MqttConfig::new(&broker.url())
    });
    cfg.duration = Duration::from_secs(2);
    cfg.warmup = Duration::from_millis(300);
    cfg.batch = 5;
    let r = load::run(cfg, Default::default()).await.unwrap();
    println!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.transport, "mqtt");
    assert_eq!(r.broker.as_deref(), Some(broker.url().as_str()));
    assert!(r.readings > 0, "{r:#?}");
    assert_eq!(r.readings, r.requests * 5, "{r:#?}");
    assert_eq!(r.errors, 0, "{r:#?}");
    assert_eq!(r.handshakes, 2, "{r:#?}");
    // What was acknowledged is stored (warm-up included), each reading once.
    let admin = AdminClient::new(&pins, &gw.token).unwrap();
    let mut stored = 0u64;
    for i in 0..2 {
        let rows = admin.readings(&format!("{dev_prefix}{i}")).await.unwrap();
        let ids: std::collections::HashSet<u64> = rows.iter().map(|r| r.msg_id).collect();
        assert_eq!(ids.len(), rows.len(), "each reading stored once");
        stored += rows.len() as u64;
    }
    assert!(
        stored >= r.readings,
        "stored {stored} < acknowledged {}",
        r.readings
    );
    gw.handle.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// The device's answer bound (1 MiB, its MQTT maximum packet size) at its edge. A stand-in
/// gateway on the broker answers each request with a payload of the size it is told: an answer
/// just under the bound is delivered; one over it never reaches the device (the broker must
/// not send a client a packet above its maximum, MQTT v5 §3.1.2.11.4), so the request times
/// out, and the transport goes on serving the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_answers_over_one_mib_never_reach_the_device() {
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    const MAX_ANSWER: usize = 1 << 20;
    let prefix = format!("t{}/iotseal", random_hex(4));
    let mut fake = broker
        .client(
            format!("fake-gw-{}", random_hex(6)),
            4 << 20,
            &[format!("{prefix}/rec/+")],
        )
        .await;
    // Sizes of the next answers, in order.
    let sizes = Arc::new(Mutex::new(std::collections::VecDeque::<usize>::new()));
    let s2 = sizes.clone();
    let fake_task = tokio::spawn(async move {
        while let Some(p) = fake.received.recv().await {
            let len = s2.lock().unwrap().pop_front().unwrap_or(1);
            let pp = p.properties.unwrap_or_default();
            let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                correlation_data: pp.correlation_data,
                ..Default::default()
            };
            let to = pp.response_topic.unwrap_or_default();
            fake.client
                .publish_bytes_with_properties(
                    to,
                    QoS::AtLeastOnce,
                    false,
                    vec![0x42; len].into(),
                    props,
                )
                .await
                .unwrap();
        }
    });

    let cfg = MqttConfig {
        topic_prefix: prefix.clone(),
        ..MqttConfig::new(&broker.url())
    };
    let transport = MqttTransport::connect(&cfg)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(3));
    use iotseal_device::{Transport, TransportError};
    // Just under the bound (the packet also carries the topic and properties).
    let under = MAX_ANSWER - 1024;
    sizes.lock().unwrap().extend([under, MAX_ANSWER + 1, 10]);
    assert_eq!(transport.records(vec![1]).await.unwrap().len(), under);
    match transport.records(vec![2]).await {
        Err(TransportError::Unavailable(m)) => assert!(m.contains("no answer"), "{m}"),
        other => panic!(
            "an answer over 1 MiB reached the device: {:?}",
            other.map(|a| a.len())
        ),
    }
    assert_eq!(transport.records(vec![3]).await.unwrap().len(), 10);
    fake_task.abort();
}
