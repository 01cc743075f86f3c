//! Cluster mode against the machine's real NATS (JetStream) and PostgreSQL: three
//! `iotseal gateway run --cluster ...` processes share one PostgreSQL schema and one NATS
//! subject/bucket prefix (both unique to the run). Devices of this test process send their
//! requests round-robin to the three nodes (every request to the next node), so M1, M3 and
//! records of one session land on different nodes and must be forwarded to the session's owner.
//! In the middle of the run one node is killed with SIGKILL; its partitions move to the others
//! once its leases expire, its sessions are lost, the devices handshake again and retransmit.
//!
//! Proven at the end: every acknowledged reading is stored, every reading sent is stored
//! exactly once byte for byte, and recorded record batches replayed to every live node are
//! refused (at most one rate-limited replay acknowledgement per batch, and nothing stored).
//!
//! NATS is found through `IOTSEAL_TEST_NATS` (`nats://127.0.0.1:4222`), PostgreSQL through
//! `IOTSEAL_TEST_PG` (`postgres://USER@127.0.0.1:5432/DB`); without both the test prints
//! "skipped" and passes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotseal_device::{
    AdminClient, BoxFuture, DeviceClient, DeviceOptions, Endpoint, GatewayPins, HttpsTransport,
    IdentityFile, Reply, Transport, TransportError,
};
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_proto::{Refusal, SigAlg, Suite};

const DEVICES: usize = 24;
const PER_FLUSH: usize = 3;
const PARTITIONS: u32 = 24;
const LEASE_MS: u64 = 2000;

fn iotseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iotseal"))
}

/// A gateway node process; killed with SIGKILL when dropped.
struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(dir: &Path, name: &str, pg: &str, nats: &str, prefix: &str, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut child = iotseal()
            .args(["gateway", "run", "--config"])
            .arg(dir.join("gateway.toml"))
            .args(["--listen", "127.0.0.1:0"])
            .args(["--storage", pg])
            .args(["--cluster", nats])
            .args(["--cluster-node-id", name])
            .args(["--cluster-prefix", prefix])
            .args(["--cluster-partitions", &PARTITIONS.to_string()])
            .args(["--cluster-lease-ms", &LEASE_MS.to_string()])
            .args(["--handshake-rate-per-ip", "1000000"])
            .args(["--handshake-burst-per-ip", "1000000"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("node started within 30 s");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Self { child, url }
    }

    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// Sends each request to the next node; remembers the record batches that were acknowledged
/// (for the replay check).
struct RoundRobin {
    nodes: Vec<HttpsTransport>,
    next: AtomicUsize,
    acked_batches: Mutex<Vec<Vec<u8>>>,
}

impl RoundRobin {
    fn pick(&self) -> &HttpsTransport {
        &self.nodes[self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()]
    }
}

impl Transport for RoundRobin {
    fn send(
        &self,
        endpoint: Endpoint,
        body: Vec<u8>,
    ) -> BoxFuture<'_, Result<Reply, TransportError>> {
        let t = self.pick();
        Box::pin(async move {
            let r = t.send(endpoint, body.clone()).await;
            if endpoint == Endpoint::Records
                && matches!(r.as_ref().map(Reply::refusal), Ok(Ok(None)))
            {
                self.acked_batches.lock().unwrap().push(body);
            }
            r
        })
    }
}

#[derive(Default)]
struct Ledger {
    sent: BTreeMap<u64, Vec<u8>>,
    acked: BTreeSet<u64>,
}

async fn run_device(
    mut dev: DeviceClient<Arc<RoundRobin>>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    mut seed: u64,
) {
    let mut unacked = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..PER_FLUSH {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let values = vec![
                (SensorKind::Temperature, (seed % 4000) as f32 / 100.0),
                (SensorKind::Humidity, (seed % 1000) as f32 / 10.0),
            ];
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while dev.pending() > 0 && Instant::now() < deadline {
        if dev.flush().await.is_ok() {
            ledger.lock().unwrap().acked.extend(unacked.drain(..));
        }
    }
    assert_eq!(dev.pending(), 0, "device {} could not deliver", dev.id());
}

fn temp_dir() -> PathBuf {
    let p = iotseal_crypto_awslc::default_provider();
    let d = std::env::temp_dir().join(format!(
        "iotseal-cluster-{}",
        hex::encode(p.random_vec(6).unwrap())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL reachable");
    tokio::spawn(conn);
    c
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

/// `iotseal_cluster_partitions_owned` of each node, from its metrics.
async fn owned(admins: &[AdminClient]) -> Vec<u64> {
    let mut v = Vec::new();
    for a in admins {
        let m = a.metrics().await.unwrap_or_default();
        let n = m
            .lines()
            .find(|l| l.starts_with("iotseal_cluster_partitions_owned"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        v.push(n);
    }
    v
}

#[test]
fn cluster_of_three_survives_a_sigkill_and_stores_everything_once() {
    let (Ok(nats), Ok(pg_base)) = (
        std::env::var("IOTSEAL_TEST_NATS"),
        std::env::var("IOTSEAL_TEST_PG"),
    ) else {
        eprintln!("skipped: set IOTSEAL_TEST_NATS and IOTSEAL_TEST_PG");
        return;
    };
    let started = Instant::now();
    let p = iotseal_crypto_awslc::default_provider();
    let run = hex::encode(p.random_vec(5).unwrap());
    let schema = format!("cluster_{run}");
    let prefix = format!("cl{run}");
    let sep = if pg_base.contains('?') { '&' } else { '?' };
    let pg_url = format!("{pg_base}{sep}options=-c%20search_path%3D{schema}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        pg(&pg_base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
    });

    let tmp = temp_dir();
    let dir = tmp.join("gw");
    let out = iotseal()
        .args(["gateway", "init", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = tmp.join("nodes.log");
    let mut nodes: Vec<Option<Node>> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Some(Node::start(&dir, n, &pg_url, &nats, &prefix, &log)))
        .collect();
    let base_pins = GatewayPins::load(&dir.join("gateway.pub.toml")).unwrap();
    let pins: Vec<GatewayPins> = nodes
        .iter()
        .map(|n| GatewayPins {
            url: n.as_ref().unwrap().url.clone(),
            ..base_pins.clone()
        })
        .collect();
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let _guard = rt.enter();
    let admins: Vec<AdminClient> = pins
        .iter()
        .map(|p| AdminClient::new(p, &token).unwrap())
        .collect();

    // The partitions are spread: each node owns its share.
    let t = Instant::now();
    loop {
        let o = rt.block_on(owned(&admins));
        if o.iter().sum::<u64>() == u64::from(PARTITIONS) && o.iter().all(|n| *n >= 6) {
            println!("partitions per node: {o:?} after {:?}", t.elapsed());
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no balance: {o:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Devices registered at node 1 only; the others learn them through the cluster.
    let suite: Suite = "x25519/ed25519/aes256gcm".parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut ledgers = Vec::new();
    let mut transports = Vec::new();
    let mut tasks = Vec::new();
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let id = format!("cl-{i}");
        let identity = IdentityFile::generate(&p, &id, SigAlg::Ed25519).unwrap();
        rt.block_on(admins[0].add_device(&id, SigAlg::Ed25519, &identity.public_key))
            .unwrap();
        devices.push((id, identity));
    }
    std::thread::sleep(Duration::from_millis(500));
    for (i, (id, identity)) in devices.into_iter().enumerate() {
        let cfg = identity
            .device_config_with(p, &pins[0], Some(vec![suite]))
            .unwrap();
        let rr = Arc::new(RoundRobin {
            nodes: pins
                .iter()
                .map(|p| {
                    HttpsTransport::new(p)
                        .unwrap()
                        .with_timeout(Duration::from_secs(5))
                })
                .collect(),
            next: AtomicUsize::new(i),
            acked_batches: Mutex::new(Vec::new()),
        });
        let opts = DeviceOptions {
            readings_per_record: PER_FLUSH,
            records_per_request: 1,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(300),
            flush_timeout: Duration::from_secs(30),
            ..DeviceOptions::default()
        };
        let dev = DeviceClient::new(cfg, rr.clone(), opts);
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        ledgers.push((id, ledger.clone()));
        transports.push(rr);
        tasks.push(rt.spawn(run_device(
            dev,
            ledger,
            stop.clone(),
            0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
        )));
    }
    let acked = |l: &[(String, Arc<Mutex<Ledger>>)]| -> usize {
        l.iter().map(|(_, l)| l.lock().unwrap().acked.len()).sum()
    };

    // Run, then SIGKILL node 2 in the middle.
    std::thread::sleep(Duration::from_secs(4));
    let before_kill = acked(&ledgers);
    assert!(before_kill > 0, "nothing acknowledged before the kill");
    nodes[1].take().unwrap().kill9();
    println!("node n2 killed with SIGKILL after {before_kill} acknowledged readings");
    // The snapshot: everything acknowledged so far is stored already. Copy the acknowledged
    // sets first: devices keep running, and an acknowledgement that arrives after the storage
    // query must not be checked against it.
    let acked_so_far: Vec<(String, Vec<u64>)> = ledgers
        .iter()
        .map(|(id, l)| {
            (
                id.clone(),
                l.lock().unwrap().acked.iter().copied().collect(),
            )
        })
        .collect();
    let snap = rt.block_on(stored(&pg_url));
    for (id, acked) in &acked_so_far {
        for m in acked {
            assert!(
                snap.get(id).is_some_and(|s| s.contains_key(m)),
                "{id}/{m} acknowledged before the kill but not stored"
            );
        }
    }
    // Keep going past the lease expiry, then let the surviving nodes take over.
    std::thread::sleep(Duration::from_millis(LEASE_MS * 3));
    let live = [&admins[0], &admins[2]];
    let t = Instant::now();
    loop {
        let o = rt.block_on(async {
            let mut v = Vec::new();
            for a in live {
                v.extend(owned(std::slice::from_ref(a)).await);
            }
            v
        });
        if o.iter().sum::<u64>() == u64::from(PARTITIONS) {
            println!("after the kill, partitions per live node: {o:?}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no takeover: {o:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_kill = acked(&ledgers);
    let t = Instant::now();
    while acked(&ledgers) <= after_kill {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no progress after the takeover"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).expect("device task");
    }

    // Every reading sent is stored exactly once, byte for byte; every acknowledged one too.
    let snap = rt.block_on(stored(&pg_url));
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
    let total: usize = snap.values().map(BTreeMap::len).sum();
    assert_eq!(total, sent);

    // Replays: recorded, acknowledged batches sent again to every live node, twice.
    let live_pins = [&pins[0], &pins[2]];
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    rt.block_on(async {
        for rr in &transports {
            let batches = rr.acked_batches.lock().unwrap().clone();
            let picks = [
                batches.first(),
                batches.get(batches.len() / 2),
                batches.last(),
            ];
            for b in picks.into_iter().flatten() {
                let mut ok = 0;
                for _ in 0..2 {
                    for p in live_pins {
                        let t = HttpsTransport::new(p).unwrap();
                        let key = match t.records(b.clone()).await {
                            Ok(_) => {
                                ok += 1;
                                "ack (rate-limited replay ack)".to_string()
                            }
                            Err(TransportError::Refused(r)) => {
                                assert!(
                                    matches!(
                                        r,
                                        Refusal::Replay
                                            | Refusal::UnknownSession
                                            | Refusal::SessionEnded
                                    ),
                                    "replay answered {r:?}"
                                );
                                format!("{r:?}")
                            }
                            Err(e) => panic!("replay: {e}"),
                        };
                        *answers.entry(key).or_default() += 1;
                    }
                }
                // One owner answers for every node: at most one replay ack per interval.
                assert!(
                    ok <= 1,
                    "a replayed batch was answered {ok} times with an ack"
                );
            }
        }
    });
    println!("replays: {answers:?}");
    let after = rt.block_on(stored(&pg_url));
    let total_after: usize = after
        .values()
        .map(|m| m.values().map(Vec::len).sum::<usize>())
        .sum();
    assert_eq!(total_after, sent, "a replay stored something");

    // Registry changes reach every node: the devices registered at node 1 are known at node
    // 3, and a revocation at node 3 is in node 1's memory at once (its sessions end there).
    let list = |a: &AdminClient| {
        let v = rt.block_on(a.devices()).unwrap();
        let arr = v
            .as_array()
            .cloned()
            .or_else(|| v.get("devices").and_then(|d| d.as_array()).cloned())
            .unwrap_or_default();
        arr.into_iter()
            .map(|d| {
                (
                    d["id"].as_str().unwrap_or_default().to_string(),
                    d["revoked"].as_bool().unwrap_or(false),
                )
            })
            .collect::<BTreeMap<String, bool>>()
    };
    assert_eq!(list(&admins[2]).len(), DEVICES, "node 3 knows every device");
    rt.block_on(admins[2].revoke("cl-0")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        list(&admins[0]).get("cl-0"),
        Some(&true),
        "node 1 learnt the revocation made at node 3"
    );
    let batch = transports[0].acked_batches.lock().unwrap().last().cloned();
    if let Some(b) = batch {
        for p in live_pins {
            let r = rt.block_on(HttpsTransport::new(p).unwrap().records(b.clone()));
            assert!(
                matches!(r, Err(TransportError::Refused(_))),
                "a revoked device's records answered {r:?}"
            );
        }
    }

    println!(
        "{DEVICES} devices over 3 nodes, one SIGKILLed: {sent} readings sent, all stored exactly once ({:?})",
        started.elapsed()
    );
    drop(nodes);
    rt.block_on(async {
        let _ = pg(&pg_base)
            .await
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await;
    });
    let _ = std::fs::remove_dir_all(&tmp);
}
