//! SqliteStorage: devices, readings, dedup, group commit, migrations, crash safety.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use iotseal_gateway::storage::sqlite::{SqliteOptions, SqliteStorage};
use iotseal_gateway::storage::{
    DeviceRecord, NewReading, ReadingQuery, SessionEvent, Storage, StoreOutcome, StoredReading,
};
use iotseal_proto::SigAlg;

fn open(path: &Path) -> SqliteStorage {
    SqliteStorage::open(path, SqliteOptions::default()).expect("open")
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("nested").join("gateway.db")
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

/// Every reading of a device (up to the default limit), oldest first.
async fn all_readings(s: &SqliteStorage, device_id: &str) -> Vec<StoredReading> {
    s.readings(ReadingQuery {
        device_id: device_id.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn raw(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).expect("raw open");
    c.busy_timeout(Duration::from_secs(10)).unwrap();
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

#[tokio::test(flavor = "multi_thread")]
async fn devices_add_duplicate_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db_path(&dir));

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
    let mut bad = device("epsilon", 7);
    bad.created_ms = u64::MAX;
    assert!(s.add_device(bad).await.is_err());

    let alpha = s.device("alpha".into()).await.unwrap().unwrap();
    assert_eq!(alpha, device("alpha", 1));
    assert_eq!(s.device("nope".into()).await.unwrap(), None);
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
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = Arc::new(open(&path));
    // All of them land in one transaction: each still gets its own answer.
    let lock = WriteLock::take(&path);
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.add_device(device("same", i)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    lock.release();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(s.devices().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db_path(&dir));
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

    let got = all_readings(&s, "dev").await;
    let ids: Vec<_> = got.iter().map(|r| r.msg_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(got[2].device_time_ms, 1002);
    assert_eq!(got[2].payload_hex, hex::encode(3u64.to_be_bytes()));
}

/// A call's outcome counts the rows written per device (in the order of each device's first
/// reading; a device whose readings were all duplicates with 0), and the device counters add
/// exactly those: `readings` is the number of rows stored (docs/decisions.md D17).
#[tokio::test(flavor = "multi_thread")]
async fn store_reports_the_rows_written_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db_path(&dir));
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
    // Nothing new for "a": listed with 0.
    let out = s
        .store_readings(vec![reading("a", 2, 1001), reading("b", 3, 1002)])
        .await
        .unwrap();
    assert_eq!(out.per_device, vec![("a".into(), 0), ("b".into(), 1)]);

    for (id, rows) in [("a", 2), ("b", 3)] {
        let d = s.device(id.into()).await.unwrap().unwrap();
        assert_eq!(d.readings, rows, "{id}");
        assert_eq!(all_readings(&s, id).await.len() as u64, rows, "{id}");
    }
    assert_eq!(s.count_readings().await.unwrap(), 5);
}

/// Schema version 5 recomputes every device's `readings` from the rows stored, in the chunks
/// and in the inbox (docs/decisions.md D17): a version-4 file whose counters are off (set by
/// hand here) opens with counters equal to its rows.
#[tokio::test(flavor = "multi_thread")]
async fn version_5_recounts_the_device_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let s = open(&path);
        for (i, id) in ["a", "b", "idle"].into_iter().enumerate() {
            s.add_device(device(id, i as u8 + 1)).await.unwrap();
        }
        // A run long enough for a chunk, and a gap, for "a"; short runs for "b".
        let run: Vec<_> = (1..=40).map(|m| reading("a", m, m)).collect();
        s.store_readings(run).await.unwrap();
        s.store_readings(vec![reading("a", 100, 100), reading("b", 1, 1)])
            .await
            .unwrap();
    }
    let c = raw(&path);
    // Closing merged the inbox: put a row back (as a crash leaves one), then break the counters
    // and go back to version 4.
    c.execute_batch(
        "INSERT INTO reading_inbox (device, first_msg, last_msg, t_min, t_max, body) \
         SELECT key, 5, 7, 5, 7, '[[5,5,5,\"00\",[]],[6,6,6,\"00\",[]],[7,7,7,\"00\",[]]]' \
         FROM devices WHERE id = 'b';
         UPDATE devices SET readings = 1000 + key;
         PRAGMA user_version = 4;",
    )
    .unwrap();
    drop(c);

    let s = open(&path);
    let counters: Vec<(String, u64)> = s
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.readings))
        .collect();
    assert_eq!(
        counters,
        [("a".into(), 41), ("b".into(), 4), ("idle".into(), 0)]
    );
    for (id, rows) in &counters {
        assert_eq!(all_readings(&s, id).await.len() as u64, *rows, "{id}");
    }
    assert_eq!(s.count_readings().await.unwrap(), 45);
    drop(s);
    let version: u32 = raw(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SqliteStorage::SCHEMA_VERSION);
}

/// Readings are stored in chunks of consecutive message ids: a call that overlaps stored
/// chunks (a retransmission regrouped differently, ids out of order, gaps) stores exactly the
/// new ids, each once, keeps the first version of the others, and chunks never share an id.
#[tokio::test(flavor = "multi_thread")]
async fn overlapping_and_scattered_ids_are_stored_once() {
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
    let mut wider = batch(&ids(5..=25));
    for r in &mut wider {
        r.payload = b"retransmitted".to_vec().into();
    }
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
            r.payload_hex == hex::encode(b"retransmitted"),
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
                 WHERE json_array_length(body) != last_msg - first_msg + 1"
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
async fn time_queries_over_chunks_match_a_full_sort() {
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
                     OR json_array_length(body) != last_msg - first_msg + 1"
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
async fn store_refuses_unknown_device_and_out_of_range_ids() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db_path(&dir));
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
    tokio::time::sleep(Duration::from_millis(200)).await;
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
                 WHERE first_msg = 1 AND last_msg = 300 AND json_array_length(body) = 300"
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
    c.execute_batch(
        "INSERT INTO reading_inbox (device, first_msg, last_msg, t_min, t_max, body) \
         SELECT key, 500, 501, 1, 2, '[[500,1,1,\"00\",[]],[501,2,2,\"01\",[]]]' \
         FROM devices WHERE id = 'dev'",
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
    assert_eq!(got[1].payload_hex, "01");
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
    tokio::time::sleep(Duration::from_millis(100)).await;
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
    tokio::time::sleep(Duration::from_millis(200)).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_stores_all_committed_and_counted() {
    // The defaults, and both bounds at a small edge (a queue of one request).
    for (max_batch, queue_capacity) in [(64, 1), (4096, 1024)] {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let opts = SqliteOptions {
            max_batch,
            queue_capacity,
            ..SqliteOptions::default()
        };
        let s = Arc::new(SqliteStorage::open(&path, opts).unwrap());
        s.add_device(device("a", 1)).await.unwrap();
        s.add_device(device("b", 2)).await.unwrap();

        // 50 tasks x 200 readings in calls of 20; task t covers ids [100t, 100t + 200) of
        // device "a" (half overlaps the next task) and the same ids of "b" on odd tasks.
        let mut tasks = Vec::new();
        for t in 0..50u64 {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                let mut total = StoreOutcome::default();
                let dev = if t % 2 == 1 { "b" } else { "a" };
                for call in 0..10u64 {
                    let batch: Vec<_> = (0..20)
                        .map(|i| {
                            let id = t * 100 + call * 20 + i;
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
        for t in tasks {
            let out = t.await.unwrap();
            total.inserted += out.inserted;
            total.duplicates += out.duplicates;
        }
        s.flush().await.unwrap();

        let c = raw(&path);
        let distinct = raw_count(&c, "SELECT count(*) FROM readings") as usize;
        assert_eq!(total.inserted, distinct);
        assert_eq!(total.inserted + total.duplicates, 50 * 200);
        assert_eq!(s.count_readings().await.unwrap() as usize, distinct);
        // Expected distinct keys, computed independently.
        let mut keys = HashSet::new();
        for t in 0..50u64 {
            let dev = if t % 2 == 1 { "b" } else { "a" };
            for id in t * 100..t * 100 + 200 {
                let d = if (id - t * 100) % 20 % 2 == 0 {
                    "a"
                } else {
                    dev
                };
                keys.insert((d, id));
            }
        }
        assert_eq!(distinct, keys.len());
        for d in s.devices().await.unwrap() {
            let n = keys.iter().filter(|(k, _)| *k == d.id).count();
            assert_eq!(d.readings as usize, n, "device {}", d.id);
        }
        assert_eq!(
            raw_count(&c, "SELECT count(*) FROM reading_values"),
            3 * distinct as i64
        );
    }
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
    tokio::time::sleep(Duration::from_millis(300)).await;
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
async fn readings_by_time_range_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db_path(&dir));
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
    let ids = |v: Vec<StoredReading>| v.into_iter().map(|r| r.msg_id).collect::<Vec<_>>();

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

    // Default limit 1000.
    assert_eq!(s.readings(q(None, None, None)).await.unwrap().len(), 1000);
    assert_eq!(
        s.readings(q(None, None, Some(u32::MAX)))
            .await
            .unwrap()
            .len(),
        1501
    );

    let other = all_readings(&s, "other").await;
    assert_eq!(ids(other), [1]);
    let none = all_readings(&s, "ghost").await;
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn long_payloads_round_trip_as_lowercase_hex() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db_path(&dir));
    s.add_device(device("dev", 1)).await.unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let r = NewReading {
        payload: payload.clone().into(),
        ..reading("dev", 1, 10)
    };
    s.store_readings(vec![r]).await.unwrap();
    let got = all_readings(&s, "dev").await;
    assert_eq!(got[0].payload_hex, hex::encode(&payload));
}

#[tokio::test(flavor = "multi_thread")]
async fn values_and_payloads_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let s = open(&path);
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

    let got = all_readings(&s, "dev").await;
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

    let c = raw(&path);
    assert_eq!(
        raw_count(&c, "SELECT count(*) FROM reading_values WHERE msg_id = 1"),
        6
    );
    assert_eq!(
        raw_count(&c, "SELECT count(*) FROM readings WHERE payload IS NULL"),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn touch_and_session_events() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&db_path(&dir));
    s.add_device(device("dev", 1)).await.unwrap();
    s.touch_device("dev".into(), 5000).await.unwrap();
    s.touch_device("dev".into(), 4000).await.unwrap();
    s.touch_device("ghost".into(), 4000).await.unwrap();
    assert_eq!(
        s.device("dev".into()).await.unwrap().unwrap().last_seen_ms,
        Some(5000)
    );
    // Many at once (the sweeper's flush): forward only, unknown ids ignored.
    s.add_device(device("dev2", 2)).await.unwrap();
    s.touch_devices(vec![
        ("dev".into(), 4500),
        ("dev2".into(), 7000),
        ("ghost".into(), 1),
    ])
    .await
    .unwrap();
    s.touch_devices(Vec::new()).await.unwrap();
    assert_eq!(
        s.device("dev".into()).await.unwrap().unwrap().last_seen_ms,
        Some(5000)
    );
    assert_eq!(
        s.device("dev2".into()).await.unwrap().unwrap().last_seen_ms,
        Some(7000)
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

/// Polls a future to completion on this thread, without a runtime.
fn poll_to_end<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(1));
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
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        lock.release();
    });
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
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50 + 70 * round));
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
                    "SELECT count(*) FROM {ALL_CHUNKS} c, json_each(c.body) r \
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
                     WHERE json_array_length(body) != last_msg - first_msg + 1"
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
    // ~31 MB of readings (~77 B each stored): about twice the WAL bound below, so a WAL that
    // is never restarted fails the test.
    for chunk in 0..100u64 {
        let rs = (0..4000)
            .map(|i| reading("dev", chunk * 4000 + i, 1000 + i))
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
