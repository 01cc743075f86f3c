//! Cluster mode in one process against the machine's real NATS (JetStream), PostgreSQL and
//! (for the MQTT test) Mosquitto: three in-process gateway nodes share one PostgreSQL schema
//! and one NATS prefix, both unique to the run.
//!
//! - `cluster_dashboard_lists_every_node`: every node's `GET /v1/cluster` (admin token) and
//!   `GET /dashboard/data` list all three nodes with their addresses and disjoint partitions
//!   that cover the whole space; a node that stops is then shown as not alive.
//! - `cluster_mqtt_requests_reach_their_owner_and_are_stored_once`: devices talk MQTT only;
//!   the nodes share the broker's subscription (`$share/...`), so each request is delivered
//!   to one node, which forwards it over NATS when another node owns its partition. Every
//!   acknowledged reading is stored exactly once, byte for byte; every request published was
//!   delivered to exactly one node; replayed record batches are refused.
//!
//! NATS: `IOTSEAL_TEST_NATS` (`nats://127.0.0.1:4222`); PostgreSQL: `IOTSEAL_TEST_PG`
//! (`postgres://USER@127.0.0.1:5432/DB`); MQTT: `IOTSEAL_TEST_MQTT` (or `mosquitto` on PATH).
//! Without them the tests print "skipped" and pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotseal_device::{
    AdminClient, BoxFuture, DeviceClient, DeviceOptions, Endpoint, GatewayPins, IdentityFile,
    MqttConfig, MqttTransport, Reply, Transport, TransportError,
};
use iotseal_gateway::client::Client;
use iotseal_gateway::{Gateway, GatewayHandle, Settings};
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_proto::{Refusal, SigAlg, Suite};
use iotseal_testkit::mqtt::TestBroker;
use iotseal_testkit::{lay_out_gateway_dir, metric, provider, root_trusting_config};
use serde_json::Value;

const PARTITIONS: u32 = 12;
const LEASE_MS: u64 = 1500;
/// How long the cluster may take to settle (membership, partitions) before a test fails.
const SETTLE: Duration = Duration::from_secs(30);

fn services() -> Option<(String, String)> {
    match (
        std::env::var("IOTSEAL_TEST_NATS"),
        std::env::var("IOTSEAL_TEST_PG"),
    ) {
        (Ok(n), Ok(p)) if !n.trim().is_empty() && !p.trim().is_empty() => Some((n, p)),
        _ => None,
    }
}

fn run_id() -> String {
    hex::encode(provider().random_vec(5).unwrap())
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL reachable");
    tokio::spawn(conn);
    c
}

/// A fresh schema; the URL that uses it.
async fn fresh_schema(pg_base: &str, run: &str) -> String {
    let schema = format!("clnodes_{run}");
    pg(pg_base)
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .unwrap();
    let sep = if pg_base.contains('?') { '&' } else { '?' };
    format!("{pg_base}{sep}options=-c%20search_path%3D{schema}")
}

/// device → msg id → payloads stored (more than one would be a duplicate).
async fn stored(url: &str) -> BTreeMap<String, BTreeMap<u64, Vec<Vec<u8>>>> {
    let c = pg(url).await;
    let mut out: BTreeMap<String, BTreeMap<u64, Vec<Vec<u8>>>> = BTreeMap::new();
    for r in c
        .query("SELECT device_id, msg_id, payload FROM readings", &[])
        .await
        .unwrap()
    {
        let (d, m, p): (String, i64, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
        out.entry(d)
            .or_default()
            .entry(m as u64)
            .or_default()
            .push(p);
    }
    out
}

/// Three nodes of one cluster, in this process.
struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<Option<GatewayHandle>>,
    names: Vec<String>,
    urls: Vec<String>,
    clients: Vec<Client>,
    token: String,
    pins: GatewayPins,
}

impl Cluster {
    async fn start(nats: &str, pg_url: &str, run: &str, edit: impl Fn(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let laid = lay_out_gateway_dir(dir.path(), &provider(), &[SigAlg::Ed25519]).unwrap();
        let cert = laid.public.tls_cert_pem.clone();
        let pins: GatewayPins = toml::from_str(&laid.public.to_toml().unwrap()).unwrap();
        let mut nodes = Vec::new();
        let mut names = Vec::new();
        let mut urls = Vec::new();
        let mut clients = Vec::new();
        for i in 1..=3 {
            let name = format!("node-{i}");
            let mut s = laid.settings.clone();
            s.storage = pg_url.to_string();
            s.cluster.url = nats.to_string();
            s.cluster.node_id = name.clone();
            s.cluster.prefix = format!("cn{run}");
            s.cluster.partitions = PARTITIONS;
            s.cluster.lease_ms = LEASE_MS;
            s.limits.handshake_rate_per_ip = 1_000_000.0;
            s.limits.handshake_burst_per_ip = 1_000_000.0;
            edit(&mut s);
            let gw = Gateway::start(s).await.unwrap();
            let url = gw.url().to_string();
            clients.push(Client::new(&url, Some(root_trusting_config(&cert))).unwrap());
            urls.push(url);
            names.push(name);
            nodes.push(Some(gw));
        }
        Self {
            _dir: dir,
            nodes,
            names,
            urls,
            clients,
            token: laid.admin_token,
            pins,
        }
    }

    fn pins(&self, i: usize) -> GatewayPins {
        GatewayPins {
            url: self.urls[i].clone(),
            ..self.pins.clone()
        }
    }

    async fn get(&self, i: usize, path: &str, token: bool) -> (u16, Vec<u8>) {
        let auth = format!("Bearer {}", self.token);
        let h: Vec<(&str, &str)> = if token {
            vec![("authorization", auth.as_str())]
        } else {
            vec![]
        };
        let r = self.clients[i]
            .request(hyper::Method::GET, path, &h, vec![])
            .await
            .unwrap();
        (r.status, r.body)
    }

    async fn json(&self, i: usize, path: &str) -> Value {
        let (status, body) = self.get(i, path, true).await;
        assert_eq!(status, 200, "{path} at node {i}");
        serde_json::from_slice(&body).unwrap()
    }

    async fn metrics(&self, i: usize) -> String {
        String::from_utf8(self.get(i, "/metrics", false).await.1).unwrap()
    }

    /// Waits until every running node sees the running nodes alive, the partitions are
    /// spread over them (each owns some, together all, none twice), and every node's view of
    /// the others' partitions is current (views are refreshed by heartbeat rounds).
    async fn settle(&self) {
        let t = Instant::now();
        loop {
            let mut ok = true;
            let mut owned = Vec::new();
            let mut actual: BTreeMap<String, Value> = BTreeMap::new();
            let mut views: Vec<BTreeMap<String, Value>> = Vec::new();
            let running: BTreeSet<&str> = self
                .nodes
                .iter()
                .zip(&self.names)
                .filter(|(n, _)| n.is_some())
                .map(|(_, name)| name.as_str())
                .collect();
            for i in (0..3).filter(|i| self.nodes[*i].is_some()) {
                let v = self.json(i, "/v1/cluster").await;
                let alive: BTreeSet<&str> = v["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["alive"] == true)
                    .map(|m| m["node"].as_str().unwrap())
                    .collect();
                ok &= alive == running;
                let mine: Vec<u64> = v["owned"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_u64().unwrap())
                    .collect();
                ok &= !mine.is_empty();
                owned.extend(mine);
                actual.insert(self.names[i].clone(), v["owned"].clone());
                views.push(nodes_of(&v["members"]));
            }
            owned.sort_unstable();
            ok &= owned == (0..u64::from(PARTITIONS)).collect::<Vec<_>>();
            for view in &views {
                for (name, own) in &actual {
                    ok &= view.get(name).is_some_and(|m| &m["owned"] == own);
                }
            }
            if ok {
                println!("settled after {:?}", t.elapsed());
                return;
            }
            assert!(
                t.elapsed() < SETTLE,
                "the cluster did not settle: running {running:?}, owned {actual:?}, views {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(&mut self, i: usize) {
        if let Some(gw) = self.nodes[i].take() {
            gw.stop().await.unwrap();
        }
    }

    async fn stop_all(&mut self) {
        for i in 0..3 {
            self.stop(i).await;
        }
    }
}

fn nodes_of(v: &Value) -> BTreeMap<String, Value> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node"].as_str().unwrap().to_string(), n.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dashboard_lists_every_node() {
    let Some((nats, pg_base)) = services() else {
        println!("skipped: set IOTSEAL_TEST_NATS and IOTSEAL_TEST_PG");
        return;
    };
    let run = run_id();
    let pg_url = fresh_schema(&pg_base, &run).await;
    let mut c = Cluster::start(&nats, &pg_url, &run, |_| {}).await;
    c.settle().await;

    for i in 0..3 {
        // The cluster view is for the operator: no token, no answer.
        assert_eq!(c.get(i, "/v1/cluster", false).await.0, 401);
        let status = c.json(i, "/v1/cluster").await;
        assert_eq!(status["node"], c.names[i].as_str());
        assert_eq!(status["address"], c.urls[i].as_str());
        let members = nodes_of(&status["members"]);
        let dash = c.json(i, "/dashboard/data").await;
        let shown = nodes_of(&dash["nodes"]);
        for view in [&members, &shown] {
            assert_eq!(
                view.keys().cloned().collect::<Vec<_>>(),
                c.names,
                "node {i} lists every node"
            );
            let mut all = Vec::new();
            for (j, name) in c.names.iter().enumerate() {
                let n = &view[name];
                assert_eq!(n["address"], c.urls[j].as_str(), "{name}'s address");
                assert_eq!(n["alive"], true, "{name} alive");
                assert_eq!(n["this_node"], j == i, "{name} this node at {i}");
                assert!(n["last_heartbeat_ms"].as_u64().unwrap() > 0);
                let owned = n["owned"].as_array().unwrap();
                assert!(!owned.is_empty(), "{name} owns partitions");
                all.extend(owned.iter().map(|p| p.as_u64().unwrap()));
            }
            // Stable ownership: the views agree on a partition of the whole space. (A member's
            // partitions are as of its last heartbeat answer; ownership does not move while
            // membership is stable.)
            all.sort_unstable();
            assert_eq!(all, (0..u64::from(PARTITIONS)).collect::<Vec<_>>());
        }
        // The node's own metrics carry its name.
        let m = c.metrics(i).await;
        let owned_here = status["owned"].as_array().unwrap().len() as u64;
        assert_eq!(
            metric(
                &m,
                &format!(
                    "iotseal_cluster_partitions_owned{{node=\"{}\"}}",
                    c.names[i]
                )
            ),
            owned_here
        );
        assert!(m.contains(&format!(
            "iotseal_cluster_forwarded_total{{node=\"{}\",direction=\"in\"}}",
            c.names[i]
        )));
    }

    // A node stops: the others keep listing it, as not alive, and take its partitions.
    c.stop(1).await;
    c.settle().await;
    for i in [0, 2] {
        let t = Instant::now();
        loop {
            let shown = nodes_of(&c.json(i, "/dashboard/data").await["nodes"]);
            if shown.get("node-2").is_some_and(|n| n["alive"] == false) {
                assert_eq!(shown.len(), 3, "the stopped node is still listed");
                assert_eq!(shown["node-1"]["alive"], true);
                assert_eq!(shown["node-3"]["alive"], true);
                break;
            }
            assert!(t.elapsed() < SETTLE, "node {i} still shows node-2 alive");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    c.stop_all().await;
}

// ---------------------------------------------------------------------------------------
// MQTT

/// The device's MQTT transport, counting what it publishes and keeping the record batches
/// that were answered (for the replay check).
struct Counting {
    inner: MqttTransport,
    published: Arc<AtomicU64>,
    answered_batches: Mutex<Vec<Vec<u8>>>,
}

impl Transport for Counting {
    fn send(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Reply, TransportError>> {
        self.published.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let r = self.inner.send(endpoint, body.clone()).await;
            if endpoint == Endpoint::Records
                && matches!(r.as_ref().map(Reply::refusal), Ok(Ok(None)))
            {
                self.answered_batches.lock().unwrap().push(body);
            }
            r
        })
    }
    fn store_and_forward(&self) -> bool {
        true
    }
}

#[derive(Default)]
struct Ledger {
    sent: BTreeMap<u64, Vec<u8>>,
    acked: BTreeSet<u64>,
}

const MQTT_DEVICES: usize = 6;
const ROUNDS: usize = 8;
const PER_FLUSH: usize = 3;

async fn run_device(mut dev: DeviceClient<Arc<Counting>>, ledger: Arc<Mutex<Ledger>>, seed: u64) {
    let mut seed = seed;
    let mut unacked = Vec::new();
    for _ in 0..ROUNDS {
        for _ in 0..PER_FLUSH {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let values = vec![(SensorKind::Temperature, (seed % 4000) as f32 / 100.0)];
            let t = dev.clock().now().0;
            let id = dev.push_at(t, values.clone(), Vec::new()).unwrap();
            let mut enc = Vec::new();
            Reading {
                msg_id: id,
                time_ms: t,
                values,
                extra: Vec::new(),
            }
            .encode(&mut enc);
            ledger.lock().unwrap().sent.insert(id, enc);
            unacked.push(id);
        }
        if dev.flush().await.is_ok() {
            ledger.lock().unwrap().acked.extend(unacked.drain(..));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while dev.pending() > 0 && Instant::now() < deadline {
        if dev.flush().await.is_ok() {
            ledger.lock().unwrap().acked.extend(unacked.drain(..));
        }
    }
    assert_eq!(dev.pending(), 0, "device {} could not deliver", dev.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mqtt_requests_reach_their_owner_and_are_stored_once() {
    let Some((nats, pg_base)) = services() else {
        println!("skipped: set IOTSEAL_TEST_NATS and IOTSEAL_TEST_PG");
        return;
    };
    let Some(broker) = TestBroker::find() else {
        println!("{}", TestBroker::SKIPPED);
        return;
    };
    let run = run_id();
    let pg_url = fresh_schema(&pg_base, &run).await;
    let topic_prefix = format!("clnodes/{run}");
    let mut c = Cluster::start(&nats, &pg_url, &run, |s| {
        s.mqtt.broker = broker.url();
        s.mqtt.topic_prefix = topic_prefix.clone();
        s.mqtt.client_id = format!("gw-{run}");
        s.mqtt.session_expiry_secs = 0;
    })
    .await;
    c.settle().await;

    // Devices registered at node 1 only; wait until every node knows them.
    let p = provider();
    let admin = AdminClient::new(&c.pins(0), &c.token).unwrap();
    let mut devices = Vec::new();
    for i in 0..MQTT_DEVICES {
        let id = format!("mq-{i}");
        let identity = IdentityFile::generate(&p, &id, SigAlg::Ed25519).unwrap();
        admin
            .add_device(&id, SigAlg::Ed25519, &identity.public_key)
            .await
            .unwrap();
        devices.push((id, identity));
    }
    for i in 0..3 {
        let t = Instant::now();
        while c
            .json(i, "/v1/devices")
            .await
            .as_array()
            .map_or(0, Vec::len)
            < MQTT_DEVICES
        {
            assert!(t.elapsed() < SETTLE, "node {i} does not know the devices");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let suite: Suite = "x25519/ed25519/aes128gcm".parse().unwrap();
    let published = Arc::new(AtomicU64::new(0));
    let mut ledgers = Vec::new();
    let mut transports = Vec::new();
    let mut tasks = Vec::new();
    for (i, (id, identity)) in devices.into_iter().enumerate() {
        let cfg = identity
            .device_config_with(p, &c.pins(0), Some(vec![suite]))
            .unwrap();
        let mqtt = MqttConfig {
            topic_prefix: topic_prefix.clone(),
            timeout: Duration::from_secs(10),
            ..MqttConfig::new(&broker.url())
        };
        let t = Arc::new(Counting {
            inner: MqttTransport::connect(&mqtt).await.unwrap(),
            published: published.clone(),
            answered_batches: Mutex::new(Vec::new()),
        });
        let opts = DeviceOptions {
            readings_per_record: PER_FLUSH,
            records_per_request: 1,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(300),
            flush_timeout: Duration::from_secs(30),
            ..DeviceOptions::default()
        };
        let dev = DeviceClient::new(cfg, t.clone(), opts);
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        ledgers.push((id, ledger.clone()));
        transports.push(t);
        tasks.push(tokio::spawn(run_device(
            dev,
            ledger,
            0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
        )));
    }
    for t in tasks {
        t.await.expect("device task");
    }

    // Every reading sent is stored exactly once, byte for byte; every one was acknowledged.
    let snap = stored(&pg_url).await;
    let mut sent = 0;
    for (id, l) in &ledgers {
        let l = l.lock().unwrap();
        let s = snap.get(id).cloned().unwrap_or_default();
        for (m, payloads) in &s {
            assert_eq!(
                payloads.len(),
                1,
                "{id}/{m} stored {} times",
                payloads.len()
            );
            assert_eq!(
                Some(&payloads[0]),
                l.sent.get(m),
                "{id}/{m}: payload differs or never sent"
            );
        }
        assert_eq!(s.len(), l.sent.len(), "{id}: not every reading stored");
        assert_eq!(l.acked.len(), l.sent.len(), "{id}: unacknowledged readings");
        sent += l.sent.len();
    }
    assert_eq!(sent, MQTT_DEVICES * ROUNDS * PER_FLUSH);

    // The broker delivered each request to exactly one node of the shared subscription, and
    // the nodes forwarded the ones they did not own.
    let count = |m: &str, name: &str, routed: &str| {
        metric(
            m,
            &format!("iotseal_cluster_mqtt_requests_total{{node=\"{name}\",routed=\"{routed}\"}}"),
        )
    };
    let (mut here, mut forwarded, mut served_in) = (0, 0, 0);
    for i in 0..3 {
        let m = c.metrics(i).await;
        here += count(&m, &c.names[i], "here");
        forwarded += count(&m, &c.names[i], "forwarded");
        served_in += metric(
            &m,
            &format!(
                "iotseal_cluster_forwarded_total{{node=\"{}\",direction=\"in\"}}",
                c.names[i]
            ),
        );
    }
    let published = published.load(Ordering::Relaxed);
    println!(
        "MQTT requests: {published} published, {here} processed where delivered, {forwarded} forwarded"
    );
    assert_eq!(
        here + forwarded,
        published,
        "each request delivered to one node"
    );
    assert!(forwarded > 0, "no request needed forwarding");
    assert!(served_in >= forwarded, "forwarded requests were served");

    // Replays: answered record batches published again (twice each) are refused, and at
    // most one is answered with a (rate-limited) replay acknowledgement; nothing is stored.
    let mqtt = MqttConfig {
        topic_prefix: topic_prefix.clone(),
        timeout: Duration::from_secs(10),
        ..MqttConfig::new(&broker.url())
    };
    let attacker = MqttTransport::connect(&mqtt).await.unwrap();
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    for t in &transports {
        let batches = t.answered_batches.lock().unwrap().clone();
        assert!(!batches.is_empty());
        let picks = [
            batches.first(),
            batches.get(batches.len() / 2),
            batches.last(),
        ];
        for b in picks.into_iter().flatten() {
            let mut ok = 0;
            for _ in 0..2 {
                let key = match attacker.records(b.clone()).await {
                    Ok(_) => {
                        ok += 1;
                        "ack (rate-limited replay ack)".to_string()
                    }
                    Err(TransportError::Refused(r)) => {
                        assert!(
                            matches!(r, Refusal::Replay),
                            "replay over MQTT answered {r:?}"
                        );
                        format!("{r:?}")
                    }
                    Err(e) => panic!("replay: {e}"),
                };
                *answers.entry(key).or_default() += 1;
            }
            assert!(ok <= 1, "a replayed batch was acknowledged {ok} times");
        }
    }
    println!("replays: {answers:?}");
    let after = stored(&pg_url).await;
    let total_after: usize = after
        .values()
        .map(|m| m.values().map(Vec::len).sum::<usize>())
        .sum();
    assert_eq!(total_after, sent, "a replay stored something");
    c.stop_all().await;
}

/// `cluster.forward_timeout_ms` at its edge: the owner of a partition (here a stand-in that
/// holds the partition's lease and subscribes to its subject, as a hung node would) takes the
/// forwarded request and never answers. The receiving node answers 503 Busy (the device
/// retries) once the timeout has passed, and counts it as
/// `iotseal_cluster_forward_failures_total{reason="timeout"}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_forward_to_a_silent_owner_times_out_as_busy() {
    let Some((nats, pg_base)) = services() else {
        println!("skipped: set IOTSEAL_TEST_NATS and IOTSEAL_TEST_PG");
        return;
    };
    let run = run_id();
    let prefix = format!("cn{run}");
    const LEASE: Duration = Duration::from_secs(4);
    const FORWARD_TIMEOUT_MS: u64 = 300;

    // The silent owner: partition 0's lease (the bucket as the nodes make it) and its subject.
    let nc = async_nats::connect(nats.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(nc.clone());
    let bucket = format!("{prefix}_owners");
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: LEASE,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    let kv = js.get_key_value(bucket).await.unwrap();
    // Held as a live node holds it: renewed well within the lease.
    let mut rev = kv.create("p0", "silent-node".into()).await.unwrap();
    let renew = tokio::spawn(async move {
        // The silent node's renewal cadence (a periodic timer, not a wait for the gateway).
        let mut every = tokio::time::interval(LEASE / 4);
        every.tick().await;
        loop {
            every.tick().await;
            rev = kv.update("p0", "silent-node".into(), rev).await.unwrap();
        }
    });
    let mut silent = nc.subscribe(format!("{prefix}.part.0")).await.unwrap();
    nc.flush().await.unwrap();

    // One node; it owns partition 1 and cannot claim 0.
    let dir = tempfile::tempdir().unwrap();
    let laid = lay_out_gateway_dir(dir.path(), &provider(), &[SigAlg::Ed25519]).unwrap();
    let mut s = laid.settings.clone();
    s.storage = fresh_schema(&pg_base, &run).await;
    s.cluster.url = nats.clone();
    s.cluster.node_id = "node-1".into();
    s.cluster.prefix = prefix.clone();
    s.cluster.partitions = 2;
    s.cluster.lease_ms = LEASE.as_millis() as u64;
    s.cluster.forward_timeout_ms = FORWARD_TIMEOUT_MS;
    let gw = Gateway::start(s).await.unwrap();
    let client = Client::new(
        gw.url(),
        Some(root_trusting_config(&laid.public.tls_cert_pem)),
    )
    .unwrap();
    let t = Instant::now();
    loop {
        let r = client
            .request(
                hyper::Method::GET,
                "/v1/cluster",
                &[("authorization", &format!("Bearer {}", laid.admin_token))],
                vec![],
            )
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        if v["owned"] == serde_json::json!([1]) {
            break;
        }
        assert!(t.elapsed() < SETTLE, "node-1 never owned partition 1: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A records request for a session in partition 0 (id 0x01020304 is even).
    let mut rec = vec![0x80, 1, 2, 3, 4, 0, 0];
    rec.extend([0u8; 24]);
    let mut body = Vec::new();
    iotseal_proto::record::batch::push(&mut body, &rec);
    let t = Instant::now();
    let r = client
        .request(hyper::Method::POST, "/v1/records", &[], body.clone())
        .await
        .unwrap();
    let waited = t.elapsed();
    assert_eq!(r.status, 503, "a silent owner is answered as Busy");
    assert_eq!(r.body, [0x7f, Refusal::Busy as u8]);
    assert!(
        waited >= Duration::from_millis(FORWARD_TIMEOUT_MS),
        "answered before the timeout: {waited:?}"
    );
    // The silent owner did get the request, unchanged.
    use futures_util::StreamExt;
    let got = tokio::time::timeout(Duration::from_secs(5), silent.next())
        .await
        .expect("the request reached the partition's owner")
        .unwrap();
    assert_eq!(&got.payload[..], &body[..]);
    let m = String::from_utf8(
        client
            .request(hyper::Method::GET, "/metrics", &[], vec![])
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(
        metric(
            &m,
            "iotseal_cluster_forward_failures_total{node=\"node-1\",reason=\"timeout\"}"
        ),
        1,
        "{m}"
    );
    gw.stop().await.unwrap();
    renew.abort();
}
