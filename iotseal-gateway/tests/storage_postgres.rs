//! PgStorage against a real PostgreSQL server: devices, readings, dedup, group commit,
//! migrations, two gateways on one database, reconnection, crash safety.
//!
//! The server is found through `IOTSEAL_TEST_PG` (a `postgres://` URL, for example
//! `postgres://root@127.0.0.1:5432/test`); without it every test prints "skipped: set
//! IOTSEAL_TEST_PG" and passes. Each test works in a schema of its own, created here and
//! dropped at the end (even when the test fails), so runs never see each other's rows.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use iotseal_gateway::storage::postgres::{PgOptions, PgStorage};
use iotseal_gateway::storage::{
    DeviceRecord, NewReading, ReadingQuery, SessionEvent, Storage, StoreOutcome,
};
use iotseal_proto::SigAlg;
use tokio_postgres::{Client, NoTls};

const ENV: &str = "IOTSEAL_TEST_PG";

/// A schema of this test's own; dropped (with everything in it) when this is dropped.
struct TestSchema {
    base: String,
    name: String,
    /// The base URL with `search_path` set to the schema (and an application name of its
    /// own, so that the test can find its connections in `pg_stat_activity`).
    url: String,
}

impl TestSchema {
    /// None (after printing why) when no server is configured.
    async fn new(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(ENV) else {
            eprintln!("skipped: set {ENV}");
            return None;
        };
        let name = unique_name(test);
        raw(&base)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let url = schema_url(&base, &name);
        Some(Self { base, name, url })
    }

    async fn client(&self) -> Client {
        raw(&self.url).await
    }

    async fn open(&self) -> PgStorage {
        PgStorage::connect(&self.url, PgOptions::default())
            .await
            .expect("connect")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // Its own thread and runtime: this may run inside (or outside) the test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (c, conn) = tokio_postgres::connect(&base, NoTls).await?;
                tokio::spawn(conn);
                c.batch_execute(&sql).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test schema {}", self.name);
        }
    }
}

fn unique_name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let mut name = format!(
        "iotseal_t{}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        test
    );
    name.truncate(63);
    name
}

fn schema_url(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}&application_name={schema}")
}

async fn raw(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

fn device(id: &str, key_byte: u8) -> DeviceRecord {
    DeviceRecord {
        id: id.into(),
        alg: SigAlg::Ed25519,
        public_key_hex: hex::encode([key_byte; 32]),
        revoked: false,
        created_ms: 1_700_000_000_000,
        last_seen_ms: None,
        readings: 0,
    }
}

fn reading(device_id: &str, msg_id: u64, device_time_ms: u64) -> NewReading {
    NewReading {
        device_id: device_id.into(),
        msg_id,
        device_time_ms,
        received_ms: device_time_ms + 5,
        payload: msg_id.to_be_bytes().to_vec().into(),
        values: vec![
            ("temperature".into(), msg_id as f64 / 10.0),
            ("humidity".into(), 40.5),
            ("pressure".into(), 1013.25),
        ],
    }
}

/// The outcome of a store call whose readings are all `device`'s.
fn outcome(device: &str, inserted: usize, duplicates: usize) -> StoreOutcome {
    StoreOutcome {
        inserted,
        duplicates,
        per_device: vec![(device.into(), inserted)],
    }
}

/// Holds an exclusive lock on `devices` from another connection, so the writer blocks on its
/// first statement and the requests sent meanwhile queue up into the next batch.
struct WriteLock(Client);

impl WriteLock {
    async fn take(t: &TestSchema) -> Self {
        let c = t.client().await;
        c.batch_execute("BEGIN; LOCK TABLE devices IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        Self(c)
    }
    async fn release(self) {
        self.0.batch_execute("COMMIT").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_add_duplicate_revoke() {
    let Some(t) = TestSchema::new("devices").await else {
        return;
    };
    let s = t.open().await;

    s.add_device(device("alpha", 1)).await.unwrap();
    s.add_device(device("beta", 2)).await.unwrap();

    let err = s.add_device(device("alpha", 3)).await.unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");
    assert!(err.to_string().contains("alpha"), "{err}");

    let err = s.add_device(device("gamma", 2)).await.unwrap_err();
    assert!(
        err.to_string().contains("public key is already registered"),
        "{err}"
    );
    assert!(err.to_string().contains("beta"), "{err}");

    // Invalid input is refused without panicking.
    let mut bad = device("delta", 4);
    bad.public_key_hex = "zz".into();
    assert!(s.add_device(bad).await.is_err());
    assert!(s.add_device(device("", 5)).await.is_err());
    assert!(s.add_device(device(&"x".repeat(33), 6)).await.is_err());
    assert!(s.add_device(device("nul\0", 8)).await.is_err());
    let mut bad = device("epsilon", 7);
    bad.created_ms = u64::MAX;
    assert!(s.add_device(bad).await.is_err());

    let alpha = s.device("alpha".into()).await.unwrap().unwrap();
    assert_eq!(alpha, device("alpha", 1));
    assert_eq!(s.device("nope".into()).await.unwrap(), None);
    assert_eq!(s.device("nul\0".into()).await.unwrap(), None);
    let all = s.devices().await.unwrap();
    let ids: Vec<_> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["alpha", "beta"]);

    assert!(s.revoke_device("beta".into()).await.unwrap());
    assert!(s.revoke_device("beta".into()).await.unwrap());
    assert!(!s.revoke_device("nope".into()).await.unwrap());
    assert!(s.device("beta".into()).await.unwrap().unwrap().revoked);
    assert!(!s.device("alpha".into()).await.unwrap().unwrap().revoked);

    // Every algorithm name round-trips.
    for (i, alg) in SigAlg::ALL.iter().enumerate() {
        let mut d = device(&format!("alg{i}"), 100 + i as u8);
        d.alg = *alg;
        s.add_device(d.clone()).await.unwrap();
        assert_eq!(s.device(d.id.clone()).await.unwrap().unwrap(), d);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_duplicate_registrations_one_wins() {
    let Some(t) = TestSchema::new("dupreg").await else {
        return;
    };
    let s = Arc::new(t.open().await);
    // All of them land in one transaction: each still gets its own answer.
    let lock = WriteLock::take(&t).await;
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.add_device(device("same", i)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.release().await;
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(s.devices().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_and_dedup() {
    let Some(t) = TestSchema::new("dedup").await else {
        return;
    };
    let s = t.open().await;
    s.add_device(device("dev", 1)).await.unwrap();

    // The same message twice in one call: stored once.
    let out = s
        .store_readings(vec![
            reading("dev", 1, 1000),
            reading("dev", 2, 1001),
            reading("dev", 1, 1000),
        ])
        .await
        .unwrap();
    assert_eq!(out, outcome("dev", 2, 1));

    // Across calls.
    let out = s
        .store_readings(vec![reading("dev", 2, 1001), reading("dev", 3, 1002)])
        .await
        .unwrap();
    assert_eq!(out, outcome("dev", 1, 1));

    // A duplicate keeps the first version.
    let mut changed = reading("dev", 3, 9999);
    changed.payload = b"other".to_vec().into();
    let out = s.store_readings(vec![changed]).await.unwrap();
    assert_eq!(out, outcome("dev", 0, 1));

    assert_eq!(
        s.store_readings(vec![]).await.unwrap(),
        StoreOutcome::default()
    );

    assert_eq!(s.count_readings().await.unwrap(), 3);
    let d = s.device("dev".into()).await.unwrap().unwrap();
    assert_eq!(d.readings, 3);
    // The latest receive time, duplicates included.
    assert_eq!(d.last_seen_ms, Some(9999 + 5));

    let got = s
        .readings(ReadingQuery {
            device_id: "dev".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = got.iter().map(|r| r.msg_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(got[2].device_time_ms, 1002);
    assert_eq!(got[2].payload_hex, hex::encode(3u64.to_be_bytes()));

    let c = t.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 3);
    assert_eq!(count(&c, "SELECT count(*) FROM reading_values").await, 9);
}

/// A call's outcome counts the rows written per device (in the order of each device's first
/// reading; a device whose readings were all duplicates with 0), alone and when several calls
/// share one statement; the device counters add exactly those: `readings` is the number of
/// rows stored (docs/decisions.md D17).
#[tokio::test(flavor = "multi_thread")]
async fn store_reports_the_rows_written_per_device() {
    let Some(t) = TestSchema::new("per_device").await else {
        return;
    };
    let s = Arc::new(t.open().await);
    s.add_device(device("a", 1)).await.unwrap();
    s.add_device(device("b", 2)).await.unwrap();

    // One reading three times (as three records of one request carry it): one row.
    let three = vec![reading("a", 1, 1000); 3];
    assert_eq!(s.store_readings(three).await.unwrap(), outcome("a", 1, 2));
    // Interleaved devices; b's message 1 is not a's.
    let out = s
        .store_readings(vec![
            reading("b", 1, 1000),
            reading("a", 1, 1000),
            reading("b", 2, 1001),
            reading("a", 2, 1001),
            reading("b", 1, 1000),
        ])
        .await
        .unwrap();
    let expected = StoreOutcome {
        inserted: 3,
        duplicates: 2,
        per_device: vec![("b".into(), 2), ("a".into(), 1)],
    };
    assert_eq!(out, expected);
    assert_eq!((out.inserted_for("a"), out.inserted_for("c")), (1, 0));

    // Three calls in one batch (one statement): split per call and per device, a message in
    // two calls counted as written by the first.
    let lock = WriteLock::take(&t).await;
    let blocked = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.store_readings(vec![reading("a", 9, 9)]).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut calls = Vec::new();
    for batch in [
        vec![reading("a", 2, 1001), reading("b", 3, 1002)],
        vec![
            reading("b", 3, 1002),
            reading("a", 3, 1003),
            reading("b", 4, 1004),
        ],
        vec![reading("a", 3, 1003)],
    ] {
        let s = Arc::clone(&s);
        calls.push(tokio::spawn(async move { s.store_readings(batch).await }));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    lock.release().await;
    assert_eq!(blocked.await.unwrap().unwrap(), outcome("a", 1, 0));
    let mut per_call = Vec::new();
    for c in calls {
        per_call.push(c.await.unwrap().unwrap().per_device);
    }
    assert_eq!(
        per_call,
        [
            vec![("a".into(), 0), ("b".into(), 1)],
            vec![("b".into(), 1), ("a".into(), 1)],
            vec![("a".into(), 0)],
        ]
    );

    let c = t.client().await;
    for (id, rows) in [("a", 4), ("b", 4)] {
        let d = s.device(id.into()).await.unwrap().unwrap();
        assert_eq!(d.readings, rows, "{id}");
        let q = format!("SELECT count(*) FROM readings WHERE device_id = '{id}'");
        assert_eq!(count(&c, &q).await as u64, rows, "{id}");
    }
}

/// Schema version 5 recomputes every device's `readings` from the rows stored
/// (docs/decisions.md D17): a version-4 schema whose counters are off (set by hand here)
/// opens with counters equal to its rows.
#[tokio::test(flavor = "multi_thread")]
async fn version_5_recounts_the_device_counters() {
    let Some(t) = TestSchema::new("recount").await else {
        return;
    };
    {
        let s = t.open().await;
        for (i, id) in ["a", "b", "idle"].into_iter().enumerate() {
            s.add_device(device(id, i as u8 + 1)).await.unwrap();
        }
        let run: Vec<_> = (1..=40).map(|m| reading("a", m, m)).collect();
        s.store_readings(run).await.unwrap();
        s.store_readings(vec![reading("a", 100, 100), reading("b", 1, 1)])
            .await
            .unwrap();
        s.flush().await.unwrap();
    }
    t.client()
        .await
        .batch_execute(
            "UPDATE devices SET readings = 1000 + key; UPDATE schema_version SET version = 4",
        )
        .await
        .unwrap();

    let s = t.open().await;
    let counters: Vec<(String, u64)> = s
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.readings))
        .collect();
    assert_eq!(
        counters,
        [("a".into(), 41), ("b".into(), 1), ("idle".into(), 0)]
    );
    assert_eq!(s.count_readings().await.unwrap(), 42);
    let c = t.client().await;
    let version = c
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap();
    assert_eq!(version.get::<_, i32>(0) as u32, PgStorage::SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_refuses_unknown_device_and_out_of_range_ids() {
    let Some(t) = TestSchema::new("refuse").await else {
        return;
    };
    let s = t.open().await;
    s.add_device(device("dev", 1)).await.unwrap();

    // The call is all-or-nothing: the known device's reading is not stored either.
    let err = s
        .store_readings(vec![reading("dev", 1, 1), reading("ghost", 1, 1)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown device"), "{err}");
    assert_eq!(s.count_readings().await.unwrap(), 0);

    let err = s
        .store_readings(vec![reading("dev", 2, 1), reading("dev", u64::MAX, 1)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("msg_id"), "{err}");
    assert_eq!(s.count_readings().await.unwrap(), 0);

    // Largest representable id is fine.
    let out = s
        .store_readings(vec![reading("dev", i64::MAX as u64, 1)])
        .await
        .unwrap();
    assert_eq!(out.inserted, 1);
    let c = t.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_request_is_isolated_in_its_batch() {
    let Some(t) = TestSchema::new("isolated").await else {
        return;
    };
    let s = Arc::new(t.open().await);
    s.add_device(device("dev", 1)).await.unwrap();

    let lock = WriteLock::take(&t).await;
    let mut tasks = Vec::new();
    for n in 0..20u64 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let batch: Vec<_> = (0..5).map(|i| reading("dev", n * 100 + i, i)).collect();
            s.store_readings(batch).await
        }));
    }
    let bad = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.store_readings(vec![reading("dev", 9000, 1), reading("ghost", 1, 1)])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.release().await;

    assert!(bad.await.unwrap().is_err());
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), outcome("dev", 5, 0));
    }
    assert_eq!(s.count_readings().await.unwrap(), 100);
    let c = t.client().await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM readings WHERE msg_id = 9000").await,
        0
    );
    assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 100);
}

/// One batch mixing stores, a failing store in the middle, a registration and a store for the
/// device registered just before it, touches and audit events: every request gets the answer
/// it would get alone, in order.
#[tokio::test(flavor = "multi_thread")]
async fn mixed_batch_keeps_order_and_isolates_failures() {
    let Some(t) = TestSchema::new("mixed").await else {
        return;
    };
    let s = Arc::new(t.open().await);
    s.add_device(device("dev", 1)).await.unwrap();

    let lock = WriteLock::take(&t).await;
    // Taken alone, blocked on the lock: everything below queues into the next batch, in the
    // order sent (a pause between sends keeps that order).
    let first = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.store_readings(vec![reading("dev", 1, 1)]).await })
    };
    let pause = || tokio::time::sleep(Duration::from_millis(15));
    pause().await;
    let mut stores = Vec::new();
    let mut spawn_store = |batch: Vec<NewReading>| {
        let s = Arc::clone(&s);
        stores.push(tokio::spawn(async move { s.store_readings(batch).await }));
    };
    spawn_store(vec![reading("dev", 10, 10), reading("dev", 11, 11)]);
    pause().await;
    // The same message as the call before: a duplicate of it, not of the database.
    spawn_store(vec![reading("dev", 11, 11), reading("dev", 12, 12)]);
    pause().await;
    let bad = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.store_readings(vec![reading("dev", 20, 20), reading("ghost", 1, 1)])
                .await
        })
    };
    pause().await;
    let touch = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.touch_device("dev".into(), 50_000).await })
    };
    pause().await;
    let register = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.add_device(device("late", 9)).await })
    };
    pause().await;
    spawn_store(vec![reading("late", 1, 1), reading("dev", 30, 30)]);
    pause().await;
    let event = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.session_event(SessionEvent {
                at_ms: 7,
                device_id: Some("late".into()),
                session_id: 1,
                event: "established".into(),
                suite: "x".into(),
            })
            .await
        })
    };
    pause().await;
    spawn_store(vec![reading("dev", 40, 40)]);
    pause().await;
    lock.release().await;

    assert_eq!(first.await.unwrap().unwrap().inserted, 1);
    let outcomes: Vec<StoreOutcome> = {
        let mut v = Vec::new();
        for task in stores {
            v.push(task.await.unwrap().unwrap());
        }
        v
    };
    let o = |inserted, duplicates| outcome("dev", inserted, duplicates);
    let late_and_dev = StoreOutcome {
        inserted: 2,
        duplicates: 0,
        per_device: vec![("late".into(), 1), ("dev".into(), 1)],
    };
    assert_eq!(outcomes, [o(2, 0), o(1, 1), late_and_dev, o(1, 0)]);
    let err = bad.await.unwrap().unwrap_err();
    assert!(
        err.to_string().contains("unknown device \"ghost\""),
        "{err}"
    );
    touch.await.unwrap().unwrap();
    register.await.unwrap().unwrap();
    event.await.unwrap().unwrap();

    let c = t.client().await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM readings WHERE msg_id = 20").await,
        0
    );
    assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 7);
    assert_eq!(count(&c, "SELECT count(*) FROM reading_values").await, 21);
    let dev = s.device("dev".into()).await.unwrap().unwrap();
    assert_eq!(dev.readings, 6);
    assert_eq!(dev.last_seen_ms, Some(50_000));
    assert_eq!(s.device("late".into()).await.unwrap().unwrap().readings, 1);
    assert_eq!(s.count_readings().await.unwrap(), 7);
    assert_eq!(s.session_events(10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_failure_fails_every_caller_of_the_batch() {
    let Some(t) = TestSchema::new("txfail").await else {
        return;
    };
    let s = Arc::new(t.open().await);
    s.add_device(device("dev", 1)).await.unwrap();
    // A deferred constraint: it fails at COMMIT, which ends the whole transaction.
    let c = t.client().await;
    c.batch_execute(
        "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'boom'; END $$; \
         CREATE CONSTRAINT TRIGGER boom AFTER INSERT ON readings \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.msg_id = 666) \
         EXECUTE FUNCTION boom();",
    )
    .await
    .unwrap();

    let lock = WriteLock::take(&t).await;
    // The first request is taken alone and waits for the lock; the others queue behind it
    // and form the next batch, together with the poisoned one.
    let first = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.store_readings(vec![reading("dev", 1, 1)]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut tasks = Vec::new();
    for n in 1..=20u64 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let batch: Vec<_> = (0..5).map(|i| reading("dev", n * 100 + i, i)).collect();
            (n, s.store_readings(batch).await)
        }));
    }
    let poisoned = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.store_readings(vec![reading("dev", 666, 1)]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.release().await;

    let err = poisoned.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    let first_stored = count(&c, "SELECT count(*) FROM readings WHERE msg_id = 1").await;
    assert_eq!(first.await.unwrap().is_ok(), first_stored == 1);
    let mut failed = 0;
    for task in tasks {
        let (n, r) = task.await.unwrap();
        let present = count(
            &c,
            &format!(
                "SELECT count(*) FROM readings WHERE msg_id BETWEEN {} AND {}",
                n * 100,
                n * 100 + 4
            ),
        )
        .await;
        // Never acknowledged without being stored, never half-written.
        match r {
            Ok(out) => {
                assert_eq!(out.inserted, 5);
                assert_eq!(present, 5);
            }
            Err(e) => {
                assert!(e.to_string().contains("rolled back"), "{e}");
                assert_eq!(present, 0);
                failed += 1;
            }
        }
    }
    // They were queued behind the lock with the poisoned request: its batch failed as a whole.
    assert!(failed > 0);
    assert_eq!(
        count(&c, "SELECT count(*) FROM readings WHERE msg_id = 666").await,
        0
    );
    let counted = s.count_readings().await.unwrap();
    assert_eq!(
        counted as i64,
        count(&c, "SELECT count(*) FROM readings").await
    );

    // The writer is usable afterwards.
    assert_eq!(
        s.store_readings(vec![reading("dev", 5000, 1)])
            .await
            .unwrap()
            .inserted,
        1
    );
}

/// 50 tasks x 200 readings in calls of 20 over two devices, half of them overlapping other
/// tasks; `stores` storages (gateways) share the database, each task using one of them.
async fn concurrent_stores(t: &TestSchema, stores: &[Arc<PgStorage>]) {
    stores[0].add_device(device("a", 1)).await.unwrap();
    stores[stores.len() - 1]
        .add_device(device("b", 2))
        .await
        .unwrap();

    // Task n covers ids [100n, 100n + 200) of device "a" (half overlaps the next task) and
    // the same ids of "b" on odd tasks.
    let mut tasks = Vec::new();
    for n in 0..50u64 {
        let s = Arc::clone(&stores[n as usize % stores.len()]);
        tasks.push(tokio::spawn(async move {
            let mut total = StoreOutcome::default();
            let dev = if n % 2 == 1 { "b" } else { "a" };
            for call in 0..10u64 {
                let batch: Vec<_> = (0..20)
                    .map(|i| {
                        let id = n * 100 + call * 20 + i;
                        reading(if i % 2 == 0 { "a" } else { dev }, id, id)
                    })
                    .collect();
                let out = s.store_readings(batch).await.unwrap();
                total.inserted += out.inserted;
                total.duplicates += out.duplicates;
            }
            total
        }));
    }
    let mut total = StoreOutcome::default();
    for task in tasks {
        let out = task.await.unwrap();
        total.inserted += out.inserted;
        total.duplicates += out.duplicates;
    }
    for s in stores {
        s.flush().await.unwrap();
    }

    let c = t.client().await;
    let distinct = count(&c, "SELECT count(*) FROM readings").await as usize;
    assert_eq!(total.inserted, distinct);
    assert_eq!(total.inserted + total.duplicates, 50 * 200);
    for s in stores {
        assert_eq!(s.count_readings().await.unwrap() as usize, distinct);
    }
    // Expected distinct keys, computed independently.
    let mut keys = HashSet::new();
    for n in 0..50u64 {
        let dev = if n % 2 == 1 { "b" } else { "a" };
        for id in n * 100..n * 100 + 200 {
            let d = if (id - n * 100) % 20 % 2 == 0 {
                "a"
            } else {
                dev
            };
            keys.insert((d, id));
        }
    }
    assert_eq!(distinct, keys.len());
    for d in stores[0].devices().await.unwrap() {
        let n = keys.iter().filter(|(k, _)| *k == d.id).count();
        assert_eq!(d.readings as usize, n, "device {}", d.id);
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM reading_values").await,
        3 * distinct as i64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_stores_all_committed_and_counted() {
    for max_batch in [64, 4096] {
        let Some(t) = TestSchema::new(&format!("concurrent{max_batch}")).await else {
            return;
        };
        let opts = PgOptions {
            max_batch,
            ..PgOptions::default()
        };
        let s = Arc::new(PgStorage::connect(&t.url, opts).await.unwrap());
        concurrent_stores(&t, &[s]).await;
    }
}

/// Two gateways on one database (as in cluster mode): they migrate together once, and
/// readings sent to both are stored once and counted exactly.
#[tokio::test(flavor = "multi_thread")]
async fn two_storages_on_one_database_store_each_reading_once() {
    let Some(t) = TestSchema::new("twogw").await else {
        return;
    };
    let (a, b) = tokio::join!(
        PgStorage::connect(&t.url, PgOptions::default()),
        PgStorage::connect(&t.url, PgOptions::default())
    );
    let stores = [Arc::new(a.unwrap()), Arc::new(b.unwrap())];
    concurrent_stores(&t, &stores).await;

    // The same registration on both at once: exactly one wins.
    let (a, b) = tokio::join!(
        stores[0].add_device(device("c", 3)),
        stores[1].add_device(device("c", 4))
    );
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    let err = a.err().or(b.err()).unwrap();
    assert!(err.to_string().contains("already registered"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn readings_by_time_range_and_limit() {
    let Some(t) = TestSchema::new("range").await else {
        return;
    };
    let s = t.open().await;
    s.add_device(device("dev", 1)).await.unwrap();
    s.add_device(device("other", 2)).await.unwrap();
    // Stored out of time order; two readings share a time.
    let mut batch: Vec<_> = (0..1500u64)
        .rev()
        .map(|i| reading("dev", i, 10 * i))
        .collect();
    batch.push(reading("dev", 5000, 100));
    batch.push(reading("other", 1, 100));
    s.store_readings(batch).await.unwrap();

    let q = |from_ms, to_ms, limit| ReadingQuery {
        device_id: "dev".into(),
        from_ms,
        to_ms,
        limit,
    };
    let ids = |v: Vec<iotseal_gateway::storage::StoredReading>| {
        v.into_iter().map(|r| r.msg_id).collect::<Vec<_>>()
    };

    // [100, 150): times 100 (ids 10 and 5000), 110, 120, 130, 140; oldest first.
    let got = ids(s.readings(q(Some(100), Some(150), None)).await.unwrap());
    assert_eq!(got, [10, 5000, 11, 12, 13, 14]);
    let got = ids(s.readings(q(Some(100), Some(150), Some(3))).await.unwrap());
    assert_eq!(got, [10, 5000, 11]);
    assert!(
        s.readings(q(Some(100), Some(150), Some(0)))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.readings(q(Some(150), Some(100), None))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.readings(q(None, Some(0), None)).await.unwrap().is_empty());
    assert!(
        s.readings(q(Some(u64::MAX), None, None))
            .await
            .unwrap()
            .is_empty()
    );
    let got = ids(s
        .readings(q(Some(14_980), Some(u64::MAX), None))
        .await
        .unwrap());
    assert_eq!(got, [1498, 1499]);

    // Default limit 1000; the largest limit is bounded (100,000) but above what is stored.
    assert_eq!(s.readings(q(None, None, None)).await.unwrap().len(), 1000);
    assert_eq!(
        s.readings(q(None, None, Some(u32::MAX)))
            .await
            .unwrap()
            .len(),
        1501
    );

    let other = s
        .readings(ReadingQuery {
            device_id: "other".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(other), [1]);
    let none = s
        .readings(ReadingQuery {
            device_id: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn values_and_payloads_round_trip() {
    let Some(t) = TestSchema::new("values").await else {
        return;
    };
    let s = t.open().await;
    s.add_device(device("dev", 1)).await.unwrap();
    let values = vec![
        ("temperature".to_string(), -12.5),
        ("temperature".to_string(), 21.0),
        ("humidity".to_string(), f64::NAN),
        ("pressure".to_string(), f64::INFINITY),
        ("accel_x".to_string(), f64::NEG_INFINITY),
        ("battery".to_string(), 0.0),
    ];
    let r1 = NewReading {
        values: values.iter().map(|(s, v)| (s.clone().into(), *v)).collect(),
        ..reading("dev", 1, 10)
    };
    let r2 = NewReading {
        payload: Default::default(),
        values: Vec::new(),
        ..reading("dev", 2, 20)
    };
    s.store_readings(vec![r1, r2]).await.unwrap();

    let got = s
        .readings(ReadingQuery {
            device_id: "dev".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].values.len(), values.len());
    for ((gs, gv), (ws, wv)) in got[0].values.iter().zip(&values) {
        assert_eq!(gs, ws);
        assert!(
            gv == wv || (gv.is_nan() && wv.is_nan()),
            "{gs}: {gv} != {wv}"
        );
    }
    assert_eq!(got[0].payload_hex, hex::encode(1u64.to_be_bytes()));
    assert!(got[1].values.is_empty());
    assert_eq!(got[1].payload_hex, "");

    let c = t.client().await;
    assert_eq!(
        count(&c, "SELECT count(*) FROM reading_values WHERE msg_id = 1").await,
        6
    );
    // NaN is stored as NULL, as in the SQLite backend.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM reading_values WHERE value IS NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM readings WHERE payload IS NULL").await,
        0
    );

    // A sensor name PostgreSQL cannot store is refused before anything is written.
    let bad = NewReading {
        values: vec![("a\0b".into(), 1.0)],
        ..reading("dev", 3, 30)
    };
    assert!(s.store_readings(vec![bad]).await.is_err());
    assert_eq!(s.count_readings().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn touch_and_session_events() {
    let Some(t) = TestSchema::new("touch").await else {
        return;
    };
    let s = t.open().await;
    s.add_device(device("dev", 1)).await.unwrap();
    s.touch_device("dev".into(), 5000).await.unwrap();
    s.touch_device("dev".into(), 4000).await.unwrap();
    s.touch_device("ghost".into(), 4000).await.unwrap();
    assert_eq!(
        s.device("dev".into()).await.unwrap().unwrap().last_seen_ms,
        Some(5000)
    );
    s.touch_devices(vec![("dev".into(), 4500), ("ghost".into(), 1)])
        .await
        .unwrap();
    assert_eq!(
        s.device("dev".into()).await.unwrap().unwrap().last_seen_ms,
        Some(5000)
    );

    for (i, ev) in ["established", "closed"].into_iter().enumerate() {
        s.session_event(SessionEvent {
            at_ms: 100 + i as u64,
            device_id: Some("dev".into()),
            session_id: 7,
            event: ev.into(),
            suite: "x25519mlkem768-ed25519-aes256gcm".into(),
        })
        .await
        .unwrap();
    }
    let refused = SessionEvent {
        at_ms: 200,
        device_id: None,
        session_id: u32::MAX,
        event: "refused:unknown-device".into(),
        suite: String::new(),
    };
    s.session_event(refused.clone()).await.unwrap();
    let got = s.session_events(10).await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], refused);
    assert_eq!(got[2].event, "established");
    assert_eq!(s.session_events(1).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_reopen_and_migrations_are_idempotent() {
    let Some(t) = TestSchema::new("reopen").await else {
        return;
    };
    {
        let s = t.open().await;
        s.add_device(device("dev", 1)).await.unwrap();
        // No flush before the drop.
        s.store_readings((0..100).map(|i| reading("dev", i, i)).collect())
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let s = t.open().await;
        assert_eq!(s.count_readings().await.unwrap(), 100);
        assert_eq!(s.device("dev".into()).await.unwrap().unwrap().readings, 100);
        let out = s.store_readings(vec![reading("dev", 5, 5)]).await.unwrap();
        assert_eq!(out.duplicates, 1);
        s.flush().await.unwrap();
    }
    let c = t.client().await;
    let row = c
        .query_one("SELECT application, version FROM schema_version", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "iotseal-gateway");
    assert_eq!(row.get::<_, i32>(1) as u32, PgStorage::SCHEMA_VERSION);
    assert_eq!(count(&c, "SELECT count(*) FROM schema_version").await, 1);
    assert_eq!(count(&c, "SELECT count(*) FROM readings").await, 100);
    // The tables are in the test's schema, and only there.
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = '{}'",
                t.name
            )
        )
        .await,
        5
    );
}

/// Dropping the storage commits what is queued, even requests whose callers went away.
#[tokio::test(flavor = "multi_thread")]
async fn drop_finishes_queued_work() {
    let Some(t) = TestSchema::new("drop").await else {
        return;
    };
    let s = t.open().await;
    s.add_device(device("dev", 1)).await.unwrap();

    let lock = WriteLock::take(&t).await;
    let mut cx = Context::from_waker(Waker::noop());
    for call in 0..10u64 {
        let batch = (0..10).map(|i| reading("dev", call * 10 + i, i)).collect();
        let mut fut = s.store_readings(batch);
        // The first poll queues the request; then the caller gives up.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    let releaser = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lock.release().await;
    });
    // The drop blocks until the writer is done: off the async threads.
    tokio::task::spawn_blocking(move || drop(s)).await.unwrap();
    releaser.await.unwrap();

    let s = t.open().await;
    assert_eq!(s.count_readings().await.unwrap(), 100);
    let c = t.client().await;
    assert_eq!(count(&c, "SELECT count(*) FROM reading_values").await, 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_newer_and_foreign_schemas() {
    let Some(t) = TestSchema::new("refuse_schema").await else {
        return;
    };
    drop(t.open().await);
    let c = t.client().await;
    c.execute(
        "UPDATE schema_version SET version = $1",
        &[&(PgStorage::SCHEMA_VERSION as i32 + 1)],
    )
    .await
    .unwrap();
    let err = PgStorage::connect(&t.url, PgOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("newer than this build"), "{err}");

    c.batch_execute("UPDATE schema_version SET version = 1, application = 'other'")
        .await
        .unwrap();
    let err = PgStorage::connect(&t.url, PgOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not iotseal"), "{err}");

    // A schema holding someone else's tables.
    let Some(foreign) = TestSchema::new("foreign").await else {
        return;
    };
    foreign
        .client()
        .await
        .batch_execute("CREATE TABLE t (x integer)")
        .await
        .unwrap();
    let err = PgStorage::connect(&foreign.url, PgOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("did not create"), "{err}");

    // A search_path naming no existing schema.
    let url = schema_url(&t.base, "iotseal_no_such_schema");
    let err = PgStorage::connect(&url, PgOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no schema"), "{err}");

    // No server there: a clear error, quickly, and no password in it.
    let start = Instant::now();
    let err = PgStorage::connect(
        "postgres://u:hunter2@127.0.0.1:1/x?connect_timeout=5",
        PgOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

/// The server ends every connection of the storage (as a restart or a failover would): the
/// storage reconnects, and nothing is stored twice.
#[tokio::test(flavor = "multi_thread")]
async fn reconnects_after_the_server_closes_its_connections() {
    let Some(t) = TestSchema::new("reconnect").await else {
        return;
    };
    let s = t.open().await;
    s.add_device(device("dev", 1)).await.unwrap();
    s.store_readings(vec![reading("dev", 1, 1)]).await.unwrap();
    assert_eq!(s.count_readings().await.unwrap(), 1);

    let admin = raw(&t.base).await;
    let killed = count(
        &admin,
        &format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{}' AND pid <> pg_backend_pid()",
            t.name
        ),
    )
    .await;
    assert!(killed >= 2, "writer and reader: {killed}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Retransmit until acknowledged, as a device would.
    let mut acked = None;
    for _ in 0..5 {
        match s
            .store_readings(vec![reading("dev", 1, 1), reading("dev", 2, 2)])
            .await
        {
            Ok(out) => {
                acked = Some(out);
                break;
            }
            Err(e) => eprintln!("store after the disconnection: {e}"),
        }
    }
    let out = acked.expect("the writer reconnected");
    assert_eq!(out.inserted + out.duplicates, 2);
    let mut counted = None;
    for _ in 0..5 {
        if let Ok(n) = s.count_readings().await {
            counted = Some(n);
            break;
        }
    }
    assert_eq!(counted, Some(2));
    assert_eq!(s.device("dev".into()).await.unwrap().unwrap().readings, 2);
}

/// `storage = "postgres://..."` in the settings opens this backend.
#[tokio::test(flavor = "multi_thread")]
async fn settings_select_postgres() {
    let Some(t) = TestSchema::new("settings").await else {
        return;
    };
    let settings = iotseal_gateway::settings::Settings {
        storage: t.url.clone(),
        ..Default::default()
    };
    assert_eq!(
        settings.storage_spec().unwrap(),
        iotseal_gateway::settings::StorageSpec::Postgres(t.url.clone())
    );
    let s = iotseal_gateway::open_storage(&settings).await.unwrap();
    s.add_device(device("dev", 1)).await.unwrap();
    assert_eq!(
        s.store_readings(vec![reading("dev", 1, 1)])
            .await
            .unwrap()
            .inserted,
        1
    );
    s.flush().await.unwrap();
}

/// Not run by default: group-commit throughput with 64 concurrent callers.
/// `IOTSEAL_TEST_PG=... cargo test -p iotseal-gateway --test storage_postgres -- --ignored
/// --nocapture throughput`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn throughput() {
    let Some(t) = TestSchema::new("throughput").await else {
        return;
    };
    let s = Arc::new(t.open().await);
    for d in 0..64u8 {
        s.add_device(device(&format!("d{d}"), d)).await.unwrap();
    }
    for per_call in [1u64, 10, 100] {
        let calls = 4000 / per_call;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for d in 0..64u64 {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                for call in 0..calls / 8 {
                    let first = per_call * 1_000_000 + call * per_call;
                    let batch = (first..first + per_call)
                        .map(|id| reading(&format!("d{d}"), id, id))
                        .collect();
                    s.store_readings(batch).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        let n = 64 * (calls / 8) * per_call;
        println!(
            "{per_call:>4} readings/call, 64 callers: {n} readings in {secs:.2} s = {:.0} \
             readings/s, {:.0} calls/s",
            n as f64 / secs,
            (64 * (calls / 8)) as f64 / secs
        );
    }
}

// ---- Crash safety: a child process stores readings and is killed with SIGKILL. ----

const CHILD_URL: &str = "IOTSEAL_PG_CRASH_CHILD_URL";
const CHILD_ROUND: &str = "IOTSEAL_PG_CRASH_CHILD_ROUND";
/// New readings per store call (ids `call * CALL .. call * CALL + CALL`).
const CALL: u64 = 10;

/// Runs only in the child (when `CHILD_URL` is set): stores readings until killed, printing
/// `ACK <id>` for every reading once `store_readings` returned.
#[tokio::test(flavor = "multi_thread")]
async fn crash_child_writer() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let s = Arc::new(
        PgStorage::connect(&url, PgOptions::default())
            .await
            .unwrap(),
    );
    if s.device("crash".into()).await.unwrap().is_none() {
        s.add_device(device("crash", 1)).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tasks = Vec::new();
    for task in 0..4u64 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let mut previous: Option<u64> = None;
            let mut call = 0u64;
            while Instant::now() < deadline {
                let first = ((round * 10 + task) * 1_000_000 + call) * CALL;
                let mut batch: Vec<_> = (first..first + CALL)
                    .map(|id| reading("crash", id, id))
                    .collect();
                // Re-send one reading of the previous call, as a device would after a lost ack.
                if let Some(p) = previous {
                    batch.push(reading("crash", p, p));
                }
                let out = s.store_readings(batch).await.unwrap();
                assert_eq!(out.inserted as u64, CALL);
                let mut line = String::new();
                for id in first..first + CALL {
                    line.push_str(&format!("ACK {id}\n"));
                }
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(line.as_bytes()).unwrap();
                stdout.flush().unwrap();
                previous = Some(first + CALL - 1);
                call += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_readings_survive_sigkill() {
    let Some(t) = TestSchema::new("crash").await else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let mut acked_all: HashSet<u64> = HashSet::new();
    let c = t.client().await;

    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_URL, &t.url)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
        let reader = {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(id) = line.strip_prefix("ACK ") {
                        acked.lock().unwrap().push(id.parse().unwrap());
                    }
                }
            })
        };
        // Let it get going, then kill it in the middle of its writes.
        let start = Instant::now();
        while acked.lock().unwrap().len() < 500 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "child made no progress"
            );
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50 + 70 * round)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(acked.len() >= 500);
        acked_all.extend(acked);

        // The server rolls back the killed client's open transaction when it notices the
        // connection is gone; reopen as the gateway would and wait for that.
        let s = t.open().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while count(
            &c,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' \
                 AND state <> 'idle' AND pid <> pg_backend_pid()",
                t.name
            ),
        )
        .await
            > 0
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counted = s.count_readings().await.unwrap();

        let stored: Vec<u64> = c
            .query("SELECT msg_id FROM readings WHERE device_id = 'crash'", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, i64>(0) as u64)
            .collect();
        let stored_set: HashSet<u64> = stored.iter().copied().collect();
        assert_eq!(stored.len(), stored_set.len(), "a reading stored twice");
        eprintln!(
            "round {round}: {} acknowledged so far, {} stored",
            acked_all.len(),
            stored.len()
        );
        let missing: Vec<_> = acked_all
            .iter()
            .filter(|id| !stored_set.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged but lost: {missing:?}"
        );
        // No partial rows: every reading has its three values, every call is whole.
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM readings r WHERE (SELECT count(*) FROM reading_values v \
                 WHERE v.device_id = r.device_id AND v.msg_id = r.msg_id) != 3"
            )
            .await,
            0
        );
        assert_eq!(
            count(
                &c,
                "SELECT count(*) FROM reading_values v WHERE NOT EXISTS (SELECT 1 FROM \
                 readings r WHERE r.device_id = v.device_id AND r.msg_id = v.msg_id)"
            )
            .await,
            0
        );
        assert_eq!(
            count(
                &c,
                &format!(
                    "SELECT count(*) FROM (SELECT msg_id / {CALL} FROM readings \
                     GROUP BY msg_id / {CALL} HAVING count(*) != {CALL}) g"
                )
            )
            .await,
            0
        );
        // The device counter moved in the same transactions.
        let total = count(&c, "SELECT count(*) FROM readings").await;
        assert_eq!(counted as i64, total);
        assert_eq!(
            count(&c, "SELECT readings FROM devices WHERE id = 'crash'").await,
            total
        );
        drop(s);
    }
}
