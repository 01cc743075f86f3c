//! SqliteStorage: the storage contract (tests/contract), and what is SQLite's own: chunks and
//! the inbox, group commit, migrations (the previous schema's files read the same after
//! migrating), the SQL views, crash safety.

mod contract;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use contract::{all_readings, device, outcome, reading, reading_with, three_values};
use iotseal_storage::sqlite::{SqliteOptions, SqliteStorage};
use iotseal_storage::{NewReading, ReadingQuery, SessionEvent, Storage, StoredReading};

fn open(path: &Path) -> SqliteStorage {
    SqliteStorage::open(path, SqliteOptions::default()).expect("open")
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("nested").join("gateway.db")
}

/// A store in a temporary directory.
struct Sqlite {
    dir: tempfile::TempDir,
    s: Option<Arc<SqliteStorage>>,
}

impl contract::Backend for Sqlite {
    type S = SqliteStorage;
    const CHECKS_DEVICES: bool = true;

    async fn fresh(_test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(open(&db_path(&dir)));
        Some(Self { dir, s: Some(s) })
    }

    fn storage(&self) -> &Arc<SqliteStorage> {
        self.s.as_ref().expect("open")
    }

    async fn events(&self, limit: u32) -> Vec<SessionEvent> {
        self.storage().session_events(limit).await.unwrap()
    }

    async fn reopen(&mut self) -> Option<()> {
        let s = Arc::into_inner(self.s.take()?).expect("no other reference");
        // Dropping it commits what is queued and stops the writer (blocking: not on the
        // runtime's threads).
        tokio::task::spawn_blocking(move || drop(s)).await.unwrap();
        self.s = Some(Arc::new(open(&db_path(&self.dir))));
        Some(())
    }
}

contract_suite!(Sqlite);

/// A chunk body of `readings` (consecutive ids), as the writer writes it (the `chunk` module,
/// docs/decisions.md D37): per reading LEB128(payload length), the payload,
/// LEB128(zigzag(received - device time)).
fn chunk_body(readings: &[NewReading]) -> Vec<u8> {
    fn leb128(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    for r in readings {
        leb128(&mut out, r.payload.len() as u64);
        out.extend_from_slice(&r.payload);
        let delta = r.received_ms as i64 - r.device_time_ms as i64;
        leb128(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
    }
    out
}

/// Waits (without a clock) until `n` requests are handed to the writer and not answered.
async fn until_pending(s: &SqliteStorage, n: usize) {
    while s.dangerous_pending_requests() < n {
        tokio::task::yield_now().await;
    }
}

/// A connection of its own, with the function the views need (as an SQL tool would).
fn raw(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("raw open");
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    SqliteStorage::register_sql_functions(&c).unwrap();
    c
}

fn raw_count(c: &rusqlite::Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Every chunk, in `reading_chunks` (`src` 0) and in the inbox (`src` 1, same columns), as an
/// SQL table.
const ALL_CHUNKS: &str = "(SELECT 0 AS src, * FROM reading_chunks \
                          UNION ALL SELECT 1 AS src, * FROM reading_inbox)";

/// Holds the database write lock from another connection, so the writer thread blocks in
/// `BEGIN IMMEDIATE` and the requests sent meanwhile queue up into one batch.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(path: &Path) -> Self {
        let c = raw(path);
        c.execute_batch("BEGIN IMMEDIATE").unwrap();
        Self(c)
    }
    fn release(self) {
        self.0.execute_batch("COMMIT").unwrap();
    }
}

/// Readings are stored in chunks of consecutive message ids: a call that overlaps stored
/// chunks (a retransmission regrouped differently, ids out of order, gaps) stores exactly the
/// new ids, each once, keeps the first version of the others, and chunks never share an id.
#[tokio::test(flavor = "multi_thread")]
async fn chunks_hold_runs_of_ids_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = open(&path);
    s.add_device(device("dev", 1)).await.unwrap();
    s.add_device(device("other", 2)).await.unwrap();
    let batch = |ids: &[u64]| -> Vec<NewReading> {
        ids.iter().map(|&m| reading("dev", m, 1000 + m)).collect()
    };
    let ids = |r: std::ops::RangeInclusive<u64>| r.collect::<Vec<_>>();

    let out = s.store_readings(batch(&ids(10..=19))).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (10, 0));
    // Covers the stored run and extends it on both sides; the stored ones keep their version.
    let wider: Vec<NewReading> = ids(5..=25)
        .into_iter()
        .map(|m| reading_with("dev", m, 1000 + m, &three_values(m), b"retransmitted"))
        .collect();
    let out = s.store_readings(wider).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (11, 10));
    // Gaps, reversed order, an id inside a stored chunk, another device in the same call.
    let mut mixed = batch(&[40, 3, 12, 31, 30, 2, 41]);
    mixed.push(reading("other", 12, 5));
    let out = s.store_readings(mixed).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (7, 1));
    // A call that is all duplicates, across four chunks.
    let mut again = ids(5..=20);
    again.extend([3, 2]);
    let out = s.store_readings(batch(&again)).await.unwrap();
    assert_eq!((out.inserted, out.duplicates), (0, 18));

    let got = all_readings(&s, "dev").await;
    let mut want: Vec<u64> = vec![2, 3];
    want.extend(ids(5..=25));
    want.extend([30, 31, 40, 41]);
    assert_eq!(got.iter().map(|r| r.msg_id).collect::<Vec<_>>(), want);
    for r in &got {
        let first_version = (10..=19).contains(&r.msg_id);
        assert_eq!(
            r.payload_hex.ends_with(&hex::encode(b"retransmitted")),
            !first_version && (5..=25).contains(&r.msg_id),
            "msg {}",
            r.msg_id
        );
    }
    assert_eq!(s.device("dev".into()).await.unwrap().unwrap().readings, 27);
    assert_eq!(s.count_readings().await.unwrap(), 28);

    let c = raw(&path);
    // No two chunks of a device share an id, and every chunk is a full run of ids.
    assert_eq!(
        raw_count(
            &c,
            &format!(
                "SELECT count(*) FROM {ALL_CHUNKS} a JOIN {ALL_CHUNKS} b \
                 ON a.device = b.device AND (a.src, a.id) < (b.src, b.id) \
                 AND a.first_msg <= b.last_msg AND b.first_msg <= a.last_msg"
            )
        ),
        0
    );
    assert_eq!(
        raw_count(
            &c,
            &format!(
                "SELECT count(*) FROM {ALL_CHUNKS} \
                 WHERE json_array_length(iotseal_chunk_json(body)) != last_msg - first_msg + 1"
            )
        ),
        0
    );
    assert_eq!(raw_count(&c, "SELECT count(*) FROM readings"), 28);
    assert_eq!(
        raw_count(
            &c,
            "SELECT count(DISTINCT device_id || ':' || msg_id) FROM readings"
        ),
        28
    );
}

/// Chunks stay within their bounds (1,024 readings, 10 minutes of device time, times in any
/// order), and time queries with limits return exactly what sorting every reading would.
#[tokio::test(flavor = "multi_thread")]
async fn chunks_stay_within_their_bounds_and_queries_match_a_full_sort() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = open(&path);
    s.add_device(device("dev", 1)).await.unwrap();
    // Device times wander (not monotonic, repeats) over ~3 hours; xorshift, fixed seed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut model: Vec<(u64, u64)> = Vec::new(); // (device time, msg id)
    let mut t: u64 = 1_700_000_000_000;
    let mut msg = 0;
    for call in 0..12 {
        let n = if call == 0 { 2500 } else { 1 + next() % 400 };
        let mut batch = Vec::new();
        for _ in 0..n {
            msg += 1;
            t = t + next() % 9_000 - 3_000 + u64::from(next() % 50 == 0) * 700_000;
            model.push((t, msg));
            batch.push(reading("dev", msg, t));
        }
        msg += next() % 3; // sometimes a gap
        s.store_readings(batch).await.unwrap();
    }
    model.sort();

    let c = raw(&path);
    assert_eq!(
        raw_count(
            &c,
            &format!(
                "SELECT count(*) FROM {ALL_CHUNKS} \
                 WHERE last_msg - first_msg + 1 > 1024 OR t_max - t_min > 600000"
            )
        ),
        0
    );
    assert!(raw_count(&c, "SELECT count(*) FROM reading_chunks") >= 3);
    // Short runs (split by the time span) wait in the inbox.
    assert!(raw_count(&c, "SELECT count(*) FROM reading_inbox") >= 3);

    // Queries over chunks and inbox, then again once the inbox is merged into the chunks.
    let (lo, hi) = (model[0].0, model[model.len() - 1].0);
    for i in 0..120 {
        if i == 60 {
            assert!(s.merge_inbox().await.unwrap() >= 3);
            assert_eq!(raw_count(&c, "SELECT count(*) FROM reading_inbox"), 0);
            assert_eq!(
                raw_count(
                    &c,
                    "SELECT count(*) FROM reading_chunks \
                     WHERE last_msg - first_msg + 1 > 1024 OR t_max - t_min > 600000 \
                     OR json_array_length(iotseal_chunk_json(body)) != last_msg - first_msg + 1"
                ),
                0
            );
        }
        let a = lo - 1000 + next() % (hi - lo + 2000);
        let b = a + next() % (if i % 3 == 0 { 20_000_000 } else { 900_000 });
        let from = (i % 5 != 0).then_some(a);
        let to = (i % 7 != 0).then_some(b);
        let limit = match i % 4 {
            0 => None,
            1 => Some(1),
            2 => Some((next() % 300) as u32),
            _ => Some(100_000),
        };
        let want: Vec<(u64, u64)> = model
            .iter()
            .filter(|(t, _)| from.is_none_or(|f| *t >= f) && to.is_none_or(|e| *t < e))
            .take(limit.unwrap_or(1000) as usize)
            .copied()
            .collect();
        let got: Vec<(u64, u64)> = s
            .readings(ReadingQuery {
                device_id: "dev".into(),
                from_ms: from,
                to_ms: to,
                limit,
            })
            .await
            .unwrap()
            .iter()
            .map(|r| (r.device_time_ms, r.msg_id))
            .collect();
        assert_eq!(
            got, want,
            "query {i}: from {from:?} to {to:?} limit {limit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_request_is_isolated_in_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = Arc::new(open(&path));
    s.add_device(device("dev", 1)).await.unwrap();

    let lock = WriteLock::take(&path);
    let mut tasks = Vec::new();
    for t in 0..20u64 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let batch: Vec<_> = (0..5).map(|i| reading("dev", t * 100 + i, i)).collect();
            (t, s.store_readings(batch).await)
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
    lock.release();

    assert!(bad.await.unwrap().is_err());
    for t in tasks {
        let (_, r) = t.await.unwrap();
        assert_eq!(r.unwrap(), outcome("dev", 5, 0));
    }
    assert_eq!(s.count_readings().await.unwrap(), 100);
    let c = raw(&path);
    assert_eq!(
        raw_count(&c, "SELECT count(*) FROM readings WHERE msg_id = 9000"),
        0
    );
    assert_eq!(raw_count(&c, "SELECT count(*) FROM readings"), 100);
    // The failed request's reading of "dev" was rolled back with its savepoint: not a duplicate.
    assert_eq!(
        s.store_readings(vec![reading("dev", 9000, 1)])
            .await
            .unwrap(),
        outcome("dev", 1, 0)
    );
}

/// One-reading calls wait in the inbox, are deduplicated there (also after a restart, from
/// the file) and against the chunks, and merge into one chunk per run of ids; queries see the
/// same readings throughout; closing the storage empties the inbox.
#[tokio::test(flavor = "multi_thread")]
async fn the_inbox_deduplicates_merges_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let ids = |got: &[StoredReading]| got.iter().map(|r| r.msg_id).collect::<Vec<_>>();
    {
        let s = SqliteStorage::open(
            &path,
            SqliteOptions {
                synchronous_full: false,
                ..SqliteOptions::default()
            },
        )
        .unwrap();
        s.add_device(device("dev", 1)).await.unwrap();
        s.add_device(device("other", 2)).await.unwrap();
        for m in 1..=300 {
            let out = s.store_readings(vec![reading("dev", m, 1000 + m)]).await;
            assert_eq!(out.unwrap(), outcome("dev", 1, 0));
        }
        s.store_readings(vec![reading("other", 7, 5)])
            .await
            .unwrap();
        let c = raw(&path);
        assert_eq!(raw_count(&c, "SELECT count(*) FROM reading_inbox"), 301);
        assert_eq!(raw_count(&c, "SELECT count(*) FROM reading_chunks"), 0);

        // Retransmits, against the inbox; a long run crossing it goes to the chunks.
        let out = s.store_readings(vec![reading("dev", 5, 1), reading("dev", 150, 1)]);
        assert_eq!(out.await.unwrap(), outcome("dev", 0, 2));
        let long: Vec<_> = (290..=340).map(|m| reading("dev", m, 1000 + m)).collect();
        assert_eq!(
            s.store_readings(long).await.unwrap(),
            outcome("dev", 40, 11)
        );
        assert_eq!(raw_count(&c, "SELECT count(*) FROM reading_chunks"), 1);
        let before = all_readings(&s, "dev").await;
        assert_eq!(ids(&before), (1..=340).collect::<Vec<_>>());

        // Merged: dev's 300 one-reading rows become one chunk, other's row its own.
        assert_eq!(s.merge_inbox().await.unwrap(), 301);
        assert_eq!(raw_count(&c, "SELECT count(*) FROM reading_inbox"), 0);
        assert_eq!(
            raw_count(
                &c,
                "SELECT count(*) FROM reading_chunks \
                 WHERE first_msg = 1 AND last_msg = 300 AND json_array_length(iotseal_chunk_json(body)) = 300"
            ),
            1
        );
        assert_eq!(raw_count(&c, "SELECT count(*) FROM reading_chunks"), 3);
        assert_eq!(all_readings(&s, "dev").await, before);
        let out = s.store_readings(vec![reading("dev", 5, 1), reading("dev", 341, 2341)]);
        assert_eq!(out.await.unwrap(), outcome("dev", 1, 1));
        // "other" had no chunk before the merge: its reading is found in its new chunk.
        let out = s.store_readings(vec![reading("other", 7, 5)]).await;
        assert_eq!(out.unwrap(), outcome("other", 0, 1));
        assert_eq!(s.count_readings().await.unwrap(), 342);
        assert_eq!(raw_count(&c, "SELECT count(*) FROM reading_inbox"), 1);
    }
    // Closing merged the inbox.
    let c = raw(&path);
    assert_eq!(raw_count(&c, "SELECT count(*) FROM reading_inbox"), 0);
    // A row left in the inbox (as a crash would leave it) is deduplicated after the restart.
    c.execute(
        "INSERT INTO reading_inbox (device, first_msg, last_msg, t_min, t_max, body) \
         SELECT key, 500, 501, 1, 2, ?1 FROM devices WHERE id = 'dev'",
        [chunk_body(&[
            reading("dev", 500, 1),
            reading_with("dev", 501, 2, &three_values(501), b"left"),
        ])],
    )
    .unwrap();
    drop(c);
    let s = open(&path);
    let out = s.store_readings(vec![reading("dev", 501, 2), reading("dev", 502, 3)]);
    assert_eq!(out.await.unwrap(), outcome("dev", 1, 1));
    let got = all_readings(&s, "dev").await;
    assert_eq!(got.len(), 341 + 3);
    // Oldest device times first: 500, 501 and 502 have times 1, 2 and 3.
    assert_eq!(ids(&got[..3]), vec![500, 501, 502]);
    // The version in the inbox stands.
    assert!(got[1].payload_hex.ends_with(&hex::encode(b"left")));
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_failure_fails_every_caller_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = Arc::new(open(&path));
    s.add_device(device("dev", 1)).await.unwrap();
    // An error after which SQLite itself rolls the whole transaction back.
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON reading_chunks \
             WHEN 666 BETWEEN NEW.first_msg AND NEW.last_msg \
             BEGIN SELECT RAISE(ROLLBACK, 'boom'); END;
             CREATE TRIGGER boom_inbox BEFORE INSERT ON reading_inbox \
             WHEN 666 BETWEEN NEW.first_msg AND NEW.last_msg \
             BEGIN SELECT RAISE(ROLLBACK, 'boom'); END;",
        )
        .unwrap();

    let lock = WriteLock::take(&path);
    // The first request is taken alone and waits for the lock; the others queue behind it
    // and form the next batch, together with the poisoned one.
    let first = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.store_readings(vec![reading("dev", 1, 1)]).await })
    };
    until_pending(&s, 1).await;
    let mut tasks = Vec::new();
    for t in 1..=20u64 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let batch: Vec<_> = (0..5).map(|i| reading("dev", t * 100 + i, i)).collect();
            (t, s.store_readings(batch).await)
        }));
    }
    let poisoned = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.store_readings(vec![reading("dev", 666, 1)]).await })
    };
    until_pending(&s, 22).await;
    lock.release();

    let err = poisoned.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("boom"), "{err}");
    let c = raw(&path);
    let first_stored = raw_count(&c, "SELECT count(*) FROM readings WHERE msg_id = 1");
    assert_eq!(first.await.unwrap().is_ok(), first_stored == 1);
    let mut failed = 0;
    for t in tasks {
        let (t, r) = t.await.unwrap();
        let present = raw_count(
            &c,
            &format!(
                "SELECT count(*) FROM readings WHERE msg_id BETWEEN {} AND {}",
                t * 100,
                t * 100 + 4
            ),
        );
        // Never acknowledged without being stored, never half-written; what was rolled back
        // is not remembered as stored (the inbox's ranges are undone too).
        match r {
            Ok(out) => {
                assert_eq!(out.inserted, 5);
                assert_eq!(present, 5);
            }
            Err(e) => {
                assert!(e.to_string().contains("rolled back"), "{e}");
                assert_eq!(present, 0);
                failed += 1;
                let again: Vec<_> = (0..5).map(|i| reading("dev", t * 100 + i, i)).collect();
                assert_eq!(s.store_readings(again).await.unwrap(), outcome("dev", 5, 0));
            }
        }
    }
    // They were queued behind the lock with the poisoned request: its batch failed as a whole.
    assert!(failed > 0);
    assert_eq!(
        raw_count(&c, "SELECT count(*) FROM readings WHERE msg_id = 666"),
        0
    );
    let counted = s.count_readings().await.unwrap();
    assert_eq!(
        counted as i64,
        raw_count(&c, "SELECT count(*) FROM readings")
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

/// `limits.storage_queue` at its edge: with the writer blocked and its queue full, callers
/// wait for room (back-pressure) instead of failing or dropping; once the writer runs, every
/// one of them is committed.
#[tokio::test(flavor = "multi_thread")]
async fn full_writer_queue_makes_callers_wait_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let opts = SqliteOptions {
        queue_capacity: 2,
        ..SqliteOptions::default()
    };
    let s = Arc::new(SqliteStorage::open(&path, opts).unwrap());
    s.add_device(device("a", 1)).await.unwrap();
    s.flush().await.unwrap();
    let lock = WriteLock::take(&path);
    let calls: Vec<_> = (0..12u64)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.store_readings(vec![reading("a", i, i)]).await })
        })
        .collect();
    until_pending(&s, 12).await;
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "nothing completes while the writer is blocked"
    );
    lock.release();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap().inserted, 1);
    }
    assert_eq!(s.count_readings().await.unwrap(), 12);
}

/// `limits.storage_read_connections` at its edge: with one read connection, concurrent
/// queries wait their turn and all succeed.
#[tokio::test(flavor = "multi_thread")]
async fn one_read_connection_serves_concurrent_queries() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        read_connections: 1,
        ..SqliteOptions::default()
    };
    let s = Arc::new(SqliteStorage::open(&db_path(&dir), opts).unwrap());
    s.add_device(device("a", 1)).await.unwrap();
    s.store_readings((1..=10).map(|i| reading("a", i, i)).collect())
        .await
        .unwrap();
    let queries: Vec<_> = (0..16)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                s.readings(ReadingQuery {
                    device_id: "a".into(),
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    for q in queries {
        assert_eq!(q.await.unwrap().unwrap().len(), 10);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let s = open(&path);
        s.add_device(device("dev", 1)).await.unwrap();
        // No flush before the drop.
        s.store_readings((0..100).map(|i| reading("dev", i, i)).collect())
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let s = open(&path);
        assert_eq!(s.count_readings().await.unwrap(), 100);
        assert_eq!(s.device("dev".into()).await.unwrap().unwrap().readings, 100);
        let out = s.store_readings(vec![reading("dev", 5, 5)]).await.unwrap();
        assert_eq!(out.duplicates, 1);
        s.flush().await.unwrap();
    }
    let c = raw(&path);
    let version: u32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SqliteStorage::SCHEMA_VERSION);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(raw_count(&c, "SELECT count(*) FROM readings"), 100);
}

/// Wakes a thread parked in [`poll_to_end`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls a future to completion on this thread, without a runtime: parked until woken.
fn poll_to_end<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Dropping the storage commits what is queued, even requests whose callers went away.
/// Also runs without a tokio runtime (reads then run inline).
#[test]
fn drop_finishes_queued_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = open(&path);
    poll_to_end(s.add_device(device("dev", 1))).unwrap();

    let lock = WriteLock::take(&path);
    let mut cx = Context::from_waker(Waker::noop());
    for call in 0..10u64 {
        let batch = (0..10).map(|i| reading("dev", call * 10 + i, i)).collect();
        let mut fut = s.store_readings(batch);
        // The first poll queues the request; then the caller gives up.
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }
    // Released while (or before) the drop waits for the writer: either way every queued
    // request is committed by the time the drop returns.
    let releaser = std::thread::spawn(move || lock.release());
    drop(s);
    releaser.join().unwrap();

    let s = open(&path);
    assert_eq!(poll_to_end(s.count_readings()).unwrap(), 100);
    assert_eq!(
        raw_count(&raw(&path), "SELECT count(*) FROM reading_values"),
        300
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_a_newer_schema_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(open(&path));
    raw(&path)
        .pragma_update(None, "user_version", SqliteStorage::SCHEMA_VERSION + 1)
        .unwrap();
    let err = SqliteStorage::open(&path, SqliteOptions::default()).unwrap_err();
    assert!(err.to_string().contains("newer than this build"), "{err}");

    let foreign = dir.path().join("foreign.db");
    raw(&foreign)
        .execute_batch("CREATE TABLE t (x INTEGER)")
        .unwrap();
    let err = SqliteStorage::open(&foreign, SqliteOptions::default()).unwrap_err();
    assert!(err.to_string().contains("did not create"), "{err}");

    // An empty file is fine (SQLite treats it as a new database).
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    drop(SqliteStorage::open(&empty, SqliteOptions::default()).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn synchronous_normal_option() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let opts = SqliteOptions {
        synchronous_full: false,
        ..SqliteOptions::default()
    };
    let s = SqliteStorage::open(&path, opts).unwrap();
    s.add_device(device("dev", 1)).await.unwrap();
    s.store_readings(vec![reading("dev", 1, 1)]).await.unwrap();
    drop(s);
    assert_eq!(open(&path).count_readings().await.unwrap(), 1);
}

// ---- Crash safety: a child process stores readings and is killed with SIGKILL. ----

const CHILD_DB: &str = "IOTSEAL_SQLITE_CRASH_CHILD_DB";
const CHILD_ROUND: &str = "IOTSEAL_SQLITE_CRASH_CHILD_ROUND";
/// New readings per store call (ids `call * CALL .. call * CALL + CALL`).
const CALL: u64 = 10;

/// Runs only in the child (when `CHILD_DB` is set): stores readings until killed, printing
/// `ACK <id>` for every reading once `store_readings` returned.
#[tokio::test(flavor = "multi_thread")]
async fn crash_child_writer() {
    let Some(path) = std::env::var_os(CHILD_DB) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let s = Arc::new(open(Path::new(&path)));
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
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn acknowledged_readings_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let exe = std::env::current_exe().unwrap();
    let mut acked_all: HashSet<u64> = HashSet::new();

    for round in 0..3u64 {
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &path)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
        // Killed in the middle of its writes: once it has acknowledged this many readings
        // (a point that moves with the round), told by the thread reading its output.
        let kill_at = 500 + 300 * round as usize;
        let (reached, kill_now) = std::sync::mpsc::channel::<()>();
        let reader = {
            let acked = Arc::clone(&acked);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(id) = line.strip_prefix("ACK ") {
                        let mut acked = acked.lock().unwrap();
                        acked.push(id.parse().unwrap());
                        if acked.len() == kill_at {
                            let _ = reached.send(());
                        }
                    }
                }
            })
        };
        // A deadline against a stuck child, not a wait for progress.
        kill_now
            .recv_timeout(Duration::from_secs(60))
            .expect("the child exited or made no progress");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(acked.len() >= 500);
        acked_all.extend(acked);

        // Reopen as the gateway would (runs the migration check on the crashed file).
        let rt = tokio::runtime::Runtime::new().unwrap();
        let counted = rt.block_on(async {
            let s = open(&path);
            s.count_readings().await.unwrap()
        });

        let c = raw(&path);
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let mut stmt = c
            .prepare("SELECT msg_id FROM readings WHERE device_id = 'crash'")
            .unwrap();
        let stored: Vec<u64> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let stored_set: HashSet<u64> = stored.iter().copied().collect();
        assert_eq!(stored.len(), stored_set.len(), "a reading stored twice");
        let missing: Vec<_> = acked_all
            .iter()
            .filter(|id| !stored_set.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged but lost: {missing:?}"
        );
        // No partial rows: every reading has its three values, every chunk holds exactly its
        // run of ids, every call is whole.
        assert_eq!(
            raw_count(
                &c,
                &format!(
                    "SELECT count(*) FROM {ALL_CHUNKS} c, json_each(iotseal_chunk_json(c.body)) r \
                     WHERE json_array_length(r.value, '$[4]') != 3 \
                     OR r.value ->> 0 != c.first_msg + r.key"
                )
            ),
            0
        );
        assert_eq!(
            raw_count(
                &c,
                &format!(
                    "SELECT count(*) FROM {ALL_CHUNKS} \
                     WHERE json_array_length(iotseal_chunk_json(body)) != last_msg - first_msg + 1"
                )
            ),
            0
        );
        assert_eq!(
            raw_count(
                &c,
                &format!(
                    "SELECT count(*) FROM (SELECT msg_id / {CALL} FROM readings \
                     GROUP BY msg_id / {CALL} HAVING count(*) != {CALL})"
                )
            ),
            0
        );
        // The device counter moved in the same transactions.
        let total = raw_count(&c, "SELECT count(*) FROM readings");
        assert_eq!(counted as i64, total);
        assert_eq!(
            raw_count(&c, "SELECT readings FROM devices WHERE id = 'crash'"),
            total
        );
    }
}

/// The WAL stays bounded under continuous writes: SQLite restarts it from its beginning only
/// after a checkpoint copied every frame, which a checkpoint racing the writer from another
/// connection never does (tried and rejected: 8.5 GB of WAL after 100 s of load). 100,000
/// readings (~30 MB of pages) go through a WAL that stays a few megabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_continuous_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = Arc::new(open(&path));
    s.add_device(device("dev", 1)).await.unwrap();
    let wal = path.with_extension("db-wal");
    let mut largest = 0;
    // ~36 MB of readings (~90 B each stored: a 64-byte extra each): about twice the WAL bound below, so a WAL that
    // is never restarted fails the test.
    for chunk in 0..100u64 {
        let rs = (0..4000)
            .map(|i| {
                let m = chunk * 4000 + i;
                reading_with("dev", m, 1000 + i, &three_values(m), &[7; 64])
            })
            .collect();
        s.store_readings(rs).await.unwrap();
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    assert_eq!(s.count_readings().await.unwrap(), 400_000);
    let main = std::fs::metadata(&path).unwrap().len();
    assert!(
        main > 24_000_000,
        "the readings reached the main file: {main} B"
    );
    assert!(
        largest < 16 << 20,
        "the WAL grew to {largest} B (main file {main} B)"
    );
}

/// The same bound with callers always waiting (the writer never idle): the checkpoints the
/// writer runs when requests are queued keep the WAL bounded too, and every reading of every
/// caller is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_with_callers_always_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = Arc::new(open(&path));
    let wal = path.with_extension("db-wal");
    let callers: u64 = 8;
    for c in 0..callers {
        s.add_device(device(&format!("dev{c}"), 1 + c as u8))
            .await
            .unwrap();
    }
    let largest = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (s, wal, largest) = (Arc::clone(&s), wal.clone(), Arc::clone(&largest));
            tokio::spawn(async move {
                let id = format!("dev{c}");
                for call in 0..50u64 {
                    let rs = (0..1000)
                        .map(|i| reading(&id, call * 1000 + i, 1000 + call * 1000 + i))
                        .collect();
                    let out = s.store_readings(rs).await.unwrap();
                    assert_eq!(out.inserted, 1000);
                    let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                    largest.fetch_max(len, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.count_readings().await.unwrap(), callers * 50_000);
    let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
    assert!(largest < 16 << 20, "the WAL grew to {largest} B");
}

/// 64 callers sending one reading per call, without pause: the inbox stays bounded (merged in
/// steps at 2,048 rows when idle, 16,384 regardless, plus at most one batch of 4,096), and every
/// reading is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_stays_bounded_under_one_reading_calls() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = Arc::new(
        SqliteStorage::open(
            &path,
            SqliteOptions {
                synchronous_full: false,
                ..SqliteOptions::default()
            },
        )
        .unwrap(),
    );
    let callers: u64 = 64;
    let calls: u64 = 500;
    for c in 0..callers {
        s.add_device(device(&format!("dev{c}"), 1 + c as u8))
            .await
            .unwrap();
    }
    let largest = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (s, path, largest) = (Arc::clone(&s), path.clone(), Arc::clone(&largest));
            tokio::spawn(async move {
                let id = format!("dev{c}");
                let c = raw(&path);
                for m in 0..calls {
                    let out = s.store_readings(vec![reading(&id, m, 1000 + m)]).await;
                    assert_eq!(out.unwrap().inserted, 1);
                    if m % 50 == 0 {
                        let rows = raw_count(&c, "SELECT count(*) FROM reading_inbox");
                        largest.fetch_max(rows, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.count_readings().await.unwrap(), callers * calls);
    let largest = largest.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        largest <= 16_384 + 4_096,
        "the inbox grew to {largest} rows"
    );
    // Merged rows became chunks of many readings, not one chunk per reading.
    let c = raw(&path);
    let chunks = raw_count(&c, "SELECT count(*) FROM reading_chunks");
    assert!(
        chunks > 0 && chunks < (callers * calls / 4) as i64,
        "{chunks} chunks"
    );
    assert_eq!(
        raw_count(&c, "SELECT count(*) FROM readings") as u64,
        callers * calls
    );
}
