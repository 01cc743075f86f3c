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

use contract::{all_readings, device, outcome, reading};
use iotseal_proto::reading::{Reading, SensorKind};
use iotseal_storage::postgres::{PgOptions, PgStorage};
use iotseal_storage::{NewReading, SessionEvent, Storage, StoreOutcome, sensor_name};
use tokio_postgres::{Client, NoTls};

mod contract;

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
            eprintln!("skipped: {ENV} not set");
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

/// A schema of its own per test.
struct Postgres {
    t: TestSchema,
    s: Option<Arc<PgStorage>>,
}

impl contract::Backend for Postgres {
    type S = PgStorage;
    const CHECKS_DEVICES: bool = true;

    async fn fresh(test: &str) -> Option<Self> {
        let t = TestSchema::new(test).await?;
        let s = Arc::new(t.open().await);
        Some(Self { t, s: Some(s) })
    }

    fn storage(&self) -> &Arc<PgStorage> {
        self.s.as_ref().expect("open")
    }

    async fn events(&self, limit: u32) -> Vec<SessionEvent> {
        self.storage().session_events(limit).await.unwrap()
    }

    async fn reopen(&mut self) -> Option<()> {
        let s = Arc::into_inner(self.s.take()?).expect("no other reference");
        tokio::task::spawn_blocking(move || drop(s)).await.unwrap();
        self.s = Some(Arc::new(self.t.open().await));
        Some(())
    }
}

contract_suite!(Postgres);

/// Waits (without a clock) until `n` requests are handed to the writer and not answered.
async fn until_pending(s: &PgStorage, n: usize) {
    while s.dangerous_pending_requests() < n {
        tokio::task::yield_now().await;
    }
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
    until_pending(&s, 21).await;
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
    // order sent (each sent once the one before is queued).
    let first = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.store_readings(vec![reading("dev", 1, 1)]).await })
    };
    // Sent one at a time: each is handed to the writer before the next is sent.
    let mut sent = 1;
    until_pending(&s, sent).await;
    let mut stores = Vec::new();
    let mut spawn_store = |batch: Vec<NewReading>| {
        let s = Arc::clone(&s);
        stores.push(tokio::spawn(async move { s.store_readings(batch).await }));
    };
    spawn_store(vec![reading("dev", 10, 10), reading("dev", 11, 11)]);
    sent += 1;
    until_pending(&s, sent).await;
    // The same message as the call before: a duplicate of it, not of the database.
    spawn_store(vec![reading("dev", 11, 11), reading("dev", 12, 12)]);
    sent += 1;
    until_pending(&s, sent).await;
    let bad = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            s.store_readings(vec![reading("dev", 20, 20), reading("ghost", 1, 1)])
                .await
        })
    };
    sent += 1;
    until_pending(&s, sent).await;
    let touch = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.touch_device("dev".into(), 50_000).await })
    };
    sent += 1;
    until_pending(&s, sent).await;
    let register = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.add_device(device("late", 9)).await })
    };
    sent += 1;
    until_pending(&s, sent).await;
    spawn_store(vec![reading("late", 1, 1), reading("dev", 30, 30)]);
    sent += 1;
    until_pending(&s, sent).await;
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
    sent += 1;
    until_pending(&s, sent).await;
    spawn_store(vec![reading("dev", 40, 40)]);
    sent += 1;
    until_pending(&s, sent).await;
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
    until_pending(&s, 1).await;
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
    until_pending(&s, 22).await;
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
    // The tables are in the test's schema, and only there (schema_version, devices,
    // readings, session_events; reading_values is a view since version 6).
    assert_eq!(
        count(
            &c,
            &format!(
                "SELECT count(*) FROM pg_tables WHERE schemaname = '{}'",
                t.name
            )
        )
        .await,
        4
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
    // Released while (or before) the drop waits for the writer: either way every queued
    // request is committed by the time the drop returns.
    let releaser = tokio::spawn(async move { lock.release().await });
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
        // Killed in the middle of its writes: once it has acknowledged this many readings.
        let kill_at = 500 + 300 * round as usize;
        while acked.lock().unwrap().len() < kill_at {
            assert!(child.try_wait().unwrap().is_none(), "child exited early");
            tokio::task::yield_now().await;
        }
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
            tokio::task::yield_now().await;
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

/// A schema at `version` (the first `version` migration scripts), empty.
async fn schema_at(t: &TestSchema, version: usize) -> Client {
    let c = t.client().await;
    c.batch_execute(
        "CREATE TABLE schema_version (
             singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
             application text    NOT NULL,
             version     integer NOT NULL
         )",
    )
    .await
    .unwrap();
    for script in &PgStorage::DANGEROUS_MIGRATIONS[..version] {
        c.batch_execute(script).await.unwrap();
    }
    c.execute(
        "INSERT INTO schema_version (application, version) VALUES ('iotseal-gateway', $1)",
        &[&(version as i32)],
    )
    .await
    .unwrap();
    c
}

/// The f32's shortest decimal form read as an f64: what versions 1 to 5 stored as a value.
fn shortest_f64(v: f32) -> f64 {
    if v.is_finite() {
        format!("{v:e}").parse().unwrap()
    } else {
        f64::from(v)
    }
}

/// Inserts readings as versions 1 to 5 wrote them: the row with its payload, and one
/// `reading_values` row per value (NaN as NULL). `tamper` changes one stored value.
async fn insert_v5(c: &Client, device_id: &str, readings: &[Reading], tamper: bool) {
    for r in readings {
        let mut payload = Vec::new();
        r.encode(&mut payload);
        c.execute(
            "INSERT INTO readings VALUES ($1, $2, $3, $4, $5)",
            &[
                &device_id,
                &(r.msg_id as i64),
                &(r.time_ms as i64),
                &(r.time_ms as i64 + 7),
                &payload,
            ],
        )
        .await
        .unwrap();
        for (i, (k, v)) in r.values.iter().enumerate() {
            let mut v = (!v.is_nan()).then(|| shortest_f64(*v));
            if tamper && r.msg_id == 2 && i == 0 {
                v = v.map(|v| v + 0.1);
            }
            c.execute(
                "INSERT INTO reading_values VALUES ($1, $2, $3, $4, $5)",
                &[
                    &device_id,
                    &(r.msg_id as i64),
                    &(i as i32),
                    &sensor_name(*k).as_ref(),
                    &v,
                ],
            )
            .await
            .unwrap();
        }
    }
}

fn old_readings() -> Vec<Reading> {
    (1..=40u64)
        .map(|i| Reading {
            msg_id: i,
            time_ms: 1_700_000_000_000 + 1000 * i,
            values: vec![
                (SensorKind::Temperature, 21.3 + i as f32 / 10.0),
                (SensorKind::Humidity, if i == 3 { f32::NAN } else { 40.5 }),
                (
                    SensorKind::Power,
                    if i == 4 { f32::NEG_INFINITY } else { 0.1 },
                ),
                (SensorKind::from_code(200), 1e-7 * i as f32),
                (SensorKind::Latitude, f32::MIN_POSITIVE / 8.0),
            ],
            extra: if i == 5 { b"app".to_vec() } else { Vec::new() },
        })
        .collect()
}

type ValueRow = (String, i64, i32, String, Option<f64>);

async fn value_rows(c: &Client) -> Vec<ValueRow> {
    c.query(
        "SELECT * FROM reading_values ORDER BY device_id, msg_id, idx",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect()
}

/// Version 6 on a schema of version 5 with readings (written as that version wrote them):
/// every reading and value reads back as before, through the API and through the
/// `reading_values` view that replaces the table; the table is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_5_schema_reads_the_same_after_the_migration() {
    let Some(t) = TestSchema::new("v5_to_v6").await else {
        return;
    };
    let c = schema_at(&t, 5).await;
    c.batch_execute(
        "INSERT INTO devices (id, alg, public_key, created_ms, readings) \
         VALUES ('dev', 'ed25519', '\\x01', 1, 40)",
    )
    .await
    .unwrap();
    insert_v5(&c, "dev", &old_readings(), false).await;
    let before = value_rows(&c).await;
    assert_eq!(before.len(), 200);

    let s = t.open().await;
    let got = all_readings(&s, "dev").await;
    assert_eq!(got.len(), 40);
    for (g, r) in got.iter().zip(old_readings()) {
        assert_eq!(
            (g.msg_id, g.device_time_ms, g.received_ms),
            (r.msg_id, r.time_ms, r.time_ms + 7)
        );
        for ((name, v), (k, want)) in g.values.iter().zip(&r.values) {
            assert_eq!(*name, sensor_name(*k));
            assert_eq!(v.to_bits(), want.to_bits());
        }
        // What version 5 served (its f64) and the f32 now: the same JSON.
        let json = serde_json::to_string(g).unwrap();
        let old = serde_json::to_string(&shortest_f64(r.values[0].1)).unwrap();
        assert!(json.contains(&format!("[\"temperature\",{old}]")), "{json}");
    }
    assert_eq!(value_rows(&c).await, before);
    let kind: String = c
        .query_one(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relname = 'reading_values'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind, "v", "reading_values is a view");
    // New readings are in the view too, without a row of their own.
    s.store_readings(vec![reading("dev", 41, 41)])
        .await
        .unwrap();
    assert_eq!(value_rows(&c).await.len(), 203);
}

/// A stored value that differs from what its payload decodes to stops the migration: the
/// schema stays at version 5, the table in place.
#[tokio::test(flavor = "multi_thread")]
async fn values_that_differ_from_their_payload_stop_the_migration() {
    let Some(t) = TestSchema::new("v6_refuses").await else {
        return;
    };
    let c = schema_at(&t, 5).await;
    c.batch_execute(
        "INSERT INTO devices (id, alg, public_key, created_ms, readings) \
         VALUES ('dev', 'ed25519', '\\x01', 1, 40)",
    )
    .await
    .unwrap();
    insert_v5(&c, "dev", &old_readings(), true).await;
    let err = PgStorage::connect(&t.url, PgOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refusing"), "{err}");
    let version: i32 = c
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 5);
}

/// Schema version 5 recomputes every device's `readings` from the rows stored
/// (docs/decisions.md D17): a version-4 schema whose counters are off opens with counters
/// equal to its rows.
#[tokio::test(flavor = "multi_thread")]
async fn version_5_recounts_the_device_counters() {
    let Some(t) = TestSchema::new("recount").await else {
        return;
    };
    let c = schema_at(&t, 4).await;
    c.batch_execute(
        "INSERT INTO devices (id, alg, public_key, created_ms, readings) VALUES \
         ('a', 'ed25519', '\\x01', 1, 1000), ('b', 'ed25519', '\\x02', 1, 1000), \
         ('idle', 'ed25519', '\\x03', 1, 1000)",
    )
    .await
    .unwrap();
    let rs = old_readings();
    insert_v5(&c, "a", &rs[..41.min(rs.len())], false).await;
    insert_v5(&c, "b", &rs[..1], false).await;

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
        [("a".into(), 40), ("b".into(), 1), ("idle".into(), 0)]
    );
    assert_eq!(s.count_readings().await.unwrap(), 41);
    let version: i32 = c
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version as u32, PgStorage::SCHEMA_VERSION);
}
