//! `kill -9` of the gateway under load loses no acknowledged reading and leaves no partial one.
//!
//! A real `iotseal gateway run` process (SQLite, TLS) is loaded by many concurrent devices of
//! this test process (`DeviceClient` over `HttpsTransport`, every reading with its own message
//! id). The gateway is killed with SIGKILL at random moments, several times, and restarted on
//! the same port each time; devices retry and handshake again. After each kill, before the
//! restart, the SQLite file is opened read-only and every reading acknowledged so far must be
//! in it, complete. At the end every reading sent must be stored exactly once, byte for byte,
//! with all of its value rows, and the devices' reading counters must agree with the rows.
//!
//! Reproduce a run with `IOTSEAL_KILL9_SEED=<seed printed by the test>`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iotseal_device::{
    AdminClient, DeviceClient, DeviceOptions, GatewayPins, HttpsTransport, IdentityFile,
};
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_proto::{SigAlg, Suite};
use rusqlite::{Connection, OpenFlags};

/// Concurrent devices.
const DEVICES: usize = 64;
/// SIGKILLs during the run.
const KILLS: usize = 8;
/// Readings per request.
const PER_FLUSH: usize = 4;

fn iotseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iotseal"))
}

/// xorshift64*: the kill moments and the payloads (no security role).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A gateway process; killed with SIGKILL when dropped (a failing test leaves nothing).
struct Gateway {
    child: Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts `gateway run` on `listen`; returns once it printed its URL.
    fn start(dir: &Path, listen: &str, log: &Path) -> Result<(Self, String), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?;
        let mut child = iotseal()
            .args(["gateway", "run", "--config"])
            .arg(dir.join("gateway.toml"))
            .args(["--listen", listen])
            // Every device connects from 127.0.0.1 and all of them handshake again after
            // each restart.
            .args(["--handshake-rate-per-ip", "1000000"])
            .args(["--handshake-burst-per-ip", "1000000"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let gw = Self { child };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "gateway did not start within 30 s".to_string())?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_string();
        Ok((gw, url))
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// What one device sent and saw acknowledged.
#[derive(Default)]
struct Ledger {
    /// msg id → the encoded reading sent.
    sent: BTreeMap<u64, Vec<u8>>,
    /// msg ids whose acknowledgement the device received.
    acked: BTreeSet<u64>,
}

async fn run_device(
    mut dev: DeviceClient<HttpsTransport>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = Rng(seed | 1);
    let mut unacked: Vec<u64> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..PER_FLUSH {
            let values = vec![
                (
                    SensorKind::Temperature,
                    (rng.below(4000) as f32) / 100.0 - 10.0,
                ),
                (SensorKind::Humidity, (rng.below(1000) as f32) / 10.0),
            ];
            let extra: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
            let t = dev.clock().now().0;
            let id = dev
                .push_at(t, values.clone(), extra.clone())
                .expect("queue has room");
            let mut enc = Vec::new();
            Reading {
                msg_id: id,
                time_ms: t,
                values,
                extra,
            }
            .encode(&mut enc);
            ledger.lock().unwrap().sent.insert(id, enc);
            unacked.push(id);
        }
        // Ok means the queue is empty: everything pushed so far was acknowledged.
        if dev.flush().await.is_ok() {
            ledger.lock().unwrap().acked.extend(unacked.drain(..));
        }
    }
    // Deliver the rest.
    let deadline = Instant::now() + Duration::from_secs(40);
    while dev.pending() > 0 && Instant::now() < deadline {
        if dev.flush().await.is_ok() {
            ledger.lock().unwrap().acked.extend(unacked.drain(..));
        }
    }
    assert_eq!(dev.pending(), 0, "device {} could not deliver", dev.id());
}

/// One stored reading: its payload and value rows.
struct Stored {
    payload: Vec<u8>,
    values: Vec<(i64, String, Option<f64>)>,
}

/// Everything in the database, read through a read-only connection.
struct Snapshot {
    /// device → msg id → reading.
    readings: BTreeMap<String, BTreeMap<u64, Stored>>,
    /// device → its `readings` counter.
    counters: BTreeMap<String, i64>,
    /// value rows whose reading does not exist.
    orphan_values: i64,
}

fn snapshot(db: &Path) -> Snapshot {
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open the database read-only");
    // The `readings` view decodes chunk bodies with the storage's SQL functions (D37).
    iotseal_gateway::storage::sqlite::SqliteStorage::register_sql_functions(&c)
        .expect("register the storage's SQL functions");
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "integrity check");
    let mut readings: BTreeMap<String, BTreeMap<u64, Stored>> = BTreeMap::new();
    let mut q = c
        .prepare("SELECT device_id, msg_id, payload FROM readings")
        .unwrap();
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (dev, id, payload) = row.unwrap();
        let prev = readings.entry(dev.clone()).or_default().insert(
            id as u64,
            Stored {
                payload,
                values: Vec::new(),
            },
        );
        assert!(prev.is_none(), "{dev}/{id} stored twice");
    }
    let mut q = c
        .prepare("SELECT device_id, msg_id, idx, sensor, value FROM reading_values ORDER BY device_id, msg_id, idx")
        .unwrap();
    let rows = q
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<f64>>(4)?,
            ))
        })
        .unwrap();
    let mut orphan_values = 0;
    for row in rows {
        let (dev, id, idx, sensor, value) = row.unwrap();
        match readings.get_mut(&dev).and_then(|m| m.get_mut(&(id as u64))) {
            Some(s) => s.values.push((idx, sensor, value)),
            None => orphan_values += 1,
        }
    }
    let mut counters = BTreeMap::new();
    let mut q = c.prepare("SELECT id, readings FROM devices").unwrap();
    for row in q
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
    {
        let (id, n) = row.unwrap();
        counters.insert(id, n);
    }
    Snapshot {
        readings,
        counters,
        orphan_values,
    }
}

/// Checks that every stored reading of `dev` is one that was sent, byte for byte, with
/// exactly its value rows; returns how many are stored.
fn check_complete(dev: &str, ledger: &Ledger, snap: &Snapshot) -> usize {
    let Some(stored) = snap.readings.get(dev) else {
        return 0;
    };
    for (id, s) in stored {
        let sent = ledger
            .sent
            .get(id)
            .unwrap_or_else(|| panic!("{dev}/{id} stored but never sent"));
        assert_eq!(&s.payload, sent, "{dev}/{id}: payload differs");
        // Two values per reading, in payload order: nothing partial.
        let idx: Vec<i64> = s.values.iter().map(|v| v.0).collect();
        assert_eq!(idx, vec![0, 1], "{dev}/{id}: value rows {:?}", s.values);
        assert_eq!(s.values[0].1, "temperature", "{dev}/{id}");
        assert_eq!(s.values[1].1, "humidity", "{dev}/{id}");
    }
    // The counter is updated in the same transaction as the rows.
    assert_eq!(
        snap.counters.get(dev).copied().unwrap_or(0),
        stored.len() as i64,
        "{dev}: readings counter disagrees with the rows"
    );
    stored.len()
}

fn temp_dir() -> PathBuf {
    let p = iotseal_crypto_awslc::default_provider();
    let d = std::env::temp_dir().join(format!(
        "iotseal-kill9-{}",
        hex::encode(p.random_vec(6).unwrap())
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_reading() {
    let started = Instant::now();
    let seed = std::env::var("IOTSEAL_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (IOTSEAL_KILL9_SEED={seed} reproduces the kill moments)");
    let mut rng = Rng(seed | 1);
    let tmp = temp_dir();
    let dir = tmp.join("gw");
    let out = iotseal()
        .args(["gateway", "init", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let log = tmp.join("gateway.log");
    let db = dir.join("iotseal.db");

    let (gw, url) = Gateway::start(&dir, "127.0.0.1:0", &log).unwrap();
    let listen = url.trim_start_matches("https://").to_string();
    let mut pins = GatewayPins::load(&dir.join("gateway.pub.toml")).unwrap();
    pins.url = url;
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let suite: Suite = "x25519/ed25519/aes256gcm".parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut ledgers: Vec<(String, Arc<Mutex<Ledger>>)> = Vec::new();
    let mut tasks = Vec::new();
    {
        let _guard = rt.enter();
        let admin = AdminClient::new(&pins, &token).unwrap();
        let p = iotseal_crypto_awslc::default_provider();
        for i in 0..DEVICES {
            let id = format!("k9-{i}");
            let identity = IdentityFile::generate(&p, &id, SigAlg::Ed25519).unwrap();
            rt.block_on(admin.add_device(&id, SigAlg::Ed25519, &identity.public_key))
                .unwrap();
            let cfg = identity
                .device_config_with(p, &pins, Some(vec![suite]))
                .unwrap();
            let transport = HttpsTransport::new(&pins)
                .unwrap()
                .with_timeout(Duration::from_secs(5));
            let opts = DeviceOptions {
                readings_per_record: PER_FLUSH,
                records_per_request: 1,
                backoff_base: Duration::from_millis(20),
                backoff_max: Duration::from_millis(300),
                flush_timeout: Duration::from_secs(30),
                ..DeviceOptions::default()
            };
            let dev = DeviceClient::new(cfg, transport, opts);
            let ledger = Arc::new(Mutex::new(Ledger::default()));
            ledgers.push((id, ledger.clone()));
            tasks.push(rt.spawn(run_device(dev, ledger, stop.clone(), rng.next())));
        }
    }

    let acked_total = |ledgers: &[(String, Arc<Mutex<Ledger>>)]| -> usize {
        ledgers
            .iter()
            .map(|(_, l)| l.lock().unwrap().acked.len())
            .sum()
    };
    let mut gw = Some(gw);
    let mut checked_acked = 0usize;
    for kill in 1..=KILLS {
        // Let the load run a random while (at least until some readings were acknowledged
        // since the last restart), then kill.
        let before = acked_total(&ledgers);
        let wait = Duration::from_millis(300 + rng.below(1200));
        let t = Instant::now();
        while t.elapsed() < wait
            || (acked_total(&ledgers) == before && t.elapsed() < Duration::from_secs(20))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        gw.take().unwrap().kill9();
        // Everything acknowledged until now was committed before the kill.
        let acked: Vec<(String, Ledger)> = ledgers
            .iter()
            .map(|(id, l)| {
                let l = l.lock().unwrap();
                (
                    id.clone(),
                    Ledger {
                        sent: l.sent.clone(),
                        acked: l.acked.clone(),
                    },
                )
            })
            .collect();
        let snap = snapshot(&db);
        assert_eq!(snap.orphan_values, 0, "value rows without their reading");
        let mut stored = 0;
        let mut n_acked = 0;
        for (id, l) in &acked {
            stored += check_complete(id, l, &snap);
            for m in &l.acked {
                assert!(
                    snap.readings.get(id).is_some_and(|s| s.contains_key(m)),
                    "kill {kill}: {id}/{m} was acknowledged but is not stored"
                );
            }
            n_acked += l.acked.len();
        }
        println!(
            "kill {kill}: after {:?}: {n_acked} acknowledged readings all stored ({stored} stored)",
            t.elapsed()
        );
        assert!(n_acked > checked_acked, "no progress between kills");
        checked_acked = n_acked;
        // Restart on the same port (it may take a moment to be free).
        let mut restarted = None;
        for _ in 0..50 {
            match Gateway::start(&dir, &listen, &log) {
                Ok((g, _)) => {
                    restarted = Some(g);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        gw = Some(restarted.expect("gateway restarted on the same port"));
    }

    // Stop producing; devices deliver what they hold; then a last kill -9.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        rt.block_on(t).expect("device task");
    }
    gw.take().unwrap().kill9();
    let snap = snapshot(&db);
    assert_eq!(snap.orphan_values, 0, "value rows without their reading");
    let mut sent = 0;
    let mut stored = 0;
    for (id, l) in &ledgers {
        let l = l.lock().unwrap();
        let n = check_complete(id, &l, &snap);
        assert_eq!(n, l.sent.len(), "{id}: not every reading sent is stored");
        assert_eq!(
            l.acked.len(),
            l.sent.len(),
            "{id}: unacknowledged readings left"
        );
        sent += l.sent.len();
        stored += n;
    }
    assert_eq!(sent, stored);
    println!(
        "{DEVICES} devices, {KILLS} kills: {sent} readings sent, all stored exactly once ({:?})",
        started.elapsed()
    );
    drop(rt);
    let _ = std::fs::remove_dir_all(&tmp);
}
