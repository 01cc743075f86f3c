//! Reads: a small pool of read-only connections used from `spawn_blocking`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, Row, params};
use tokio::sync::Semaphore;

use super::schema::CHUNK_SPAN_MS;
use super::{chunk, db, schema};
use crate::{
    DeviceRecord, ReadingQuery, SessionEvent, StorageError, StoredReading, decode_payload,
    stored_reading,
};

/// Readings returned when the query sets no limit.
pub(super) const DEFAULT_LIMIT: u32 = 1000;
/// Most readings one query returns.
pub(super) const MAX_LIMIT: u32 = 100_000;

pub(super) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// A pool of at most `max` connections; `first` is an already open one.
    pub(super) fn new(
        path: PathBuf,
        busy_timeout: Duration,
        max: usize,
        first: Connection,
    ) -> Self {
        Self {
            path,
            busy_timeout,
            idle: Mutex::new(vec![first]),
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    fn checkout(&self) -> Result<Connection, StorageError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(c) => Ok(c),
            None => schema::open_reader(&self.path, self.busy_timeout),
        }
    }

    fn checkin(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }

    /// Runs `f` on a read connection, off the async threads when inside a tokio runtime.
    pub(super) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StorageError("sqlite: read pool closed".into()))?;
        let this = Arc::clone(self);
        let job = move || {
            let _permit = permit;
            let conn = this.checkout()?;
            let result = f(&conn);
            this.checkin(conn);
            result
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(job)
                .await
                .map_err(|e| StorageError(format!("sqlite: read task failed: {e}")))?,
            // Polled outside tokio: run inline rather than panic.
            Err(_) => job(),
        }
    }
}

fn to_u64(v: i64, what: &str) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError(format!("sqlite: negative {what} in database: {v}")))
}

const DEVICE_COLUMNS: &str =
    "SELECT id, alg, public_key, revoked, created_ms, last_seen_ms, readings FROM devices";

type DeviceColumns = (String, String, Vec<u8>, bool, i64, Option<i64>, i64);

fn device_columns(r: &Row<'_>) -> rusqlite::Result<DeviceColumns> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn device_record(c: DeviceColumns) -> Result<DeviceRecord, StorageError> {
    let (id, alg, key, revoked, created_ms, last_seen_ms, readings) = c;
    let alg = alg.parse().map_err(|_| {
        StorageError(format!(
            "sqlite: device {id:?} has an unknown algorithm {alg:?}"
        ))
    })?;
    Ok(DeviceRecord {
        alg,
        public_key_hex: hex::encode(key),
        revoked,
        created_ms: to_u64(created_ms, "created_ms")?,
        last_seen_ms: last_seen_ms
            .map(|v| to_u64(v, "last_seen_ms"))
            .transpose()?,
        readings: to_u64(readings, "readings count")?,
        id,
    })
}

pub(super) fn device(conn: &Connection, id: &str) -> Result<Option<DeviceRecord>, StorageError> {
    let mut stmt = conn
        .prepare_cached(&format!("{DEVICE_COLUMNS} WHERE id = ?1"))
        .map_err(db)?;
    let mut rows = stmt.query([id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => device_record(device_columns(row).map_err(db)?).map(Some),
        None => Ok(None),
    }
}

pub(super) fn devices(conn: &Connection) -> Result<Vec<DeviceRecord>, StorageError> {
    let mut stmt = conn
        .prepare_cached(&format!("{DEVICE_COLUMNS} ORDER BY id"))
        .map_err(db)?;
    let rows = stmt.query_map([], device_columns).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(device_record))
        .collect()
}

pub(super) fn count_readings(conn: &Connection) -> Result<u64, StorageError> {
    // The per-device counters are maintained in the transactions that insert readings, so
    // their sum equals COUNT(*) on readings without scanning it.
    let n: i64 = conn
        .prepare_cached("SELECT coalesce(sum(readings), 0) FROM devices")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db)?;
    to_u64(n, "readings count")
}

pub(super) fn readings(
    conn: &Connection,
    q: &ReadingQuery,
) -> Result<Vec<StoredReading>, StorageError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    // Device times are stored as non-negative i64; bounds outside that range select nothing
    // (from) or everything (to). The upper bound is made inclusive: to_ms - 1.
    let from = match q.from_ms.map(i64::try_from) {
        None => 0,
        Some(Ok(v)) => v,
        Some(Err(_)) => return Ok(Vec::new()),
    };
    let to_inclusive = match q.to_ms {
        None => i64::MAX,
        Some(0) => return Ok(Vec::new()),
        Some(t) => i64::try_from(t - 1).unwrap_or(i64::MAX),
    };
    if limit == 0 || from > to_inclusive {
        return Ok(Vec::new());
    }

    // One read transaction: a consistent snapshot. First the inbox's rows of the device (no
    // index: a scan of the inbox, at most ~20k rows), then the chunks in order of their
    // earliest device time; a chunk holding a reading at t >= from starts at or after
    // from - CHUNK_SPAN_MS, which bounds the index range. Once `limit` readings are collected,
    // a chunk starting after the limit-th earliest time so far cannot contribute.
    let tx = conn.unchecked_transaction().map_err(db)?;
    let limit = limit as usize;
    let mut out: Vec<StoredReading> = Vec::new();
    let mut threshold: Option<u64> = None;
    let order = |a: &StoredReading, b: &StoredReading| {
        (a.device_time_ms, a.msg_id).cmp(&(b.device_time_ms, b.msg_id))
    };
    {
        let mut scratch = Vec::new();
        // The readings of one chunk body within the time range, appended to `out`; then keep
        // at most 2 × limit (amortized): sort, cut, remember the cut-off time.
        let mut take = |body: Vec<u8>,
                        out: &mut Vec<StoredReading>,
                        threshold: &mut Option<u64>|
         -> Result<(), StorageError> {
            for e in chunk::Elements::new(&body) {
                let (payload, delta) = e?;
                let time = match decode_payload(&mut scratch, payload) {
                    Ok(r) => r.time_ms,
                    Err(e) => return Err(StorageError(format!("sqlite: {}", e.0))),
                };
                if !(from..=to_inclusive).contains(&i64::try_from(time).unwrap_or(i64::MAX)) {
                    continue;
                }
                let received = chunk::received_ms(time, delta)?;
                out.push(stored_reading(
                    &q.device_id,
                    received,
                    payload,
                    &mut scratch,
                )?);
            }
            if out.len() >= limit.saturating_mul(2) || (threshold.is_none() && out.len() >= limit) {
                out.sort_unstable_by(order);
                out.truncate(limit);
                *threshold = out.last().map(|r| r.device_time_ms);
            }
            Ok(())
        };
        let mut inbox = tx
            .prepare_cached(
                "SELECT body FROM reading_inbox \
                 WHERE device = (SELECT key FROM devices WHERE id = ?1) \
                 AND t_min <= ?2 AND t_max >= ?3",
            )
            .map_err(db)?;
        let mut rows = inbox
            .query(params![q.device_id, to_inclusive, from])
            .map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            take(row.get(0).map_err(db)?, &mut out, &mut threshold)?;
        }
        let mut chunks = tx
            .prepare_cached(
                "SELECT t_min, body FROM reading_chunks \
                 WHERE device = (SELECT key FROM devices WHERE id = ?1) \
                 AND t_min BETWEEN ?2 AND ?3 AND t_max >= ?4 ORDER BY t_min",
            )
            .map_err(db)?;
        let mut rows = chunks
            .query(params![
                q.device_id,
                from.saturating_sub(CHUNK_SPAN_MS),
                to_inclusive,
                from
            ])
            .map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let t_min: i64 = row.get(0).map_err(db)?;
            if threshold.is_some_and(|t| to_u64(t_min, "t_min").is_ok_and(|m| m > t)) {
                break;
            }
            take(row.get(1).map_err(db)?, &mut out, &mut threshold)?;
        }
    }
    tx.commit().map_err(db)?;
    out.sort_unstable_by(order);
    out.truncate(limit);
    Ok(out)
}

pub(super) fn session_events(
    conn: &Connection,
    limit: u32,
) -> Result<Vec<SessionEvent>, StorageError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at_ms, device_id, session_id, event, suite FROM session_events \
             ORDER BY id DESC LIMIT ?1",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([limit.min(MAX_LIMIT)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, u32>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .map_err(db)?;
    rows.map(|r| {
        let (at_ms, device_id, session_id, event, suite) = r.map_err(db)?;
        Ok(SessionEvent {
            at_ms: to_u64(at_ms, "at_ms")?,
            device_id,
            session_id,
            event,
            suite,
        })
    })
    .collect()
}
