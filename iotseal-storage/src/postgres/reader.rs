//! Reads: a small pool of read-only connections, each with its statements prepared once.

use std::ops::Deref;
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::{Client, Row, Statement};

use super::schema::Target;

use super::{pg, schema};
use crate::{
    DeviceRecord, ReadingQuery, SessionEvent, StorageError, StoredReading, stored_reading,
};

/// Readings returned when the query sets no limit.
pub(super) const DEFAULT_LIMIT: u32 = 1000;
/// Most readings (or audit entries) one query returns.
pub(super) const MAX_LIMIT: u32 = 100_000;

const DEVICE_COLUMNS: &str =
    "SELECT id, alg, public_key, revoked, created_ms, last_seen_ms, readings FROM devices";

/// A read connection and its statements.
pub(super) struct ReadConn {
    client: Client,
    device: Statement,
    devices: Statement,
    count: Statement,
    readings: Statement,
    events: Statement,
}

impl ReadConn {
    /// Connects (on the storage's runtime: `tokio::spawn` drives the connection there).
    async fn open(config: Target) -> Result<Self, StorageError> {
        let client = schema::connect(&config).await?;
        // Reads only: a bug here cannot write.
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .map_err(pg)?;
        let prepare = async |sql: &str| client.prepare(sql).await.map_err(pg);
        let device = prepare(&format!("{DEVICE_COLUMNS} WHERE id = $1")).await?;
        let devices = prepare(&format!("{DEVICE_COLUMNS} ORDER BY id")).await?;
        // The per-device counters are maintained in the transactions that insert readings, so
        // their sum equals count(*) on readings without scanning it.
        let count = prepare("SELECT coalesce(sum(readings), 0)::bigint FROM devices").await?;
        // The values are decoded from the payloads here, not stored (D37).
        let readings = prepare(
            "SELECT msg_id, device_time_ms, received_ms, payload FROM readings \
             WHERE device_id = $1 AND device_time_ms BETWEEN $2 AND $3 \
             ORDER BY device_time_ms, msg_id LIMIT $4",
        )
        .await?;
        let events = prepare(
            "SELECT at_ms, device_id, session_id, event, suite FROM session_events \
             ORDER BY id DESC LIMIT $1",
        )
        .await?;
        Ok(Self {
            client,
            device,
            devices,
            count,
            readings,
            events,
        })
    }
}

/// The pool: at most `max` connections, opened on demand, kept while they work.
pub(super) struct Readers {
    config: Target,
    runtime: tokio::runtime::Handle,
    idle: Mutex<Vec<ReadConn>>,
    permits: Semaphore,
}

/// A connection lent by the pool; returned to it on drop unless it broke.
pub(super) struct Lease<'a> {
    pool: &'a Readers,
    conn: Option<ReadConn>,
    _permit: SemaphorePermit<'a>,
}

impl Deref for Lease<'_> {
    type Target = ReadConn;
    fn deref(&self) -> &ReadConn {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }
}

impl Readers {
    /// Connections are driven on `runtime` (the storage's own thread).
    pub(super) fn new(config: Target, runtime: tokio::runtime::Handle, max: usize) -> Self {
        Self {
            config,
            runtime,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)),
        }
    }

    /// A connection: an idle one that still works, or a new one.
    pub(super) async fn get(&self) -> Result<Lease<'_>, StorageError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StorageError("postgres: read pool closed".into()))?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match idle {
                Some(c) if c.client.is_closed() => continue,
                Some(c) => {
                    return Ok(Lease {
                        pool: self,
                        conn: Some(c),
                        _permit: permit,
                    });
                }
                None => break,
            }
        }
        let conn = self
            .runtime
            .spawn(ReadConn::open(self.config.clone()))
            .await
            .map_err(|e| StorageError(format!("postgres: connecting a reader failed: {e}")))??;
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

fn to_u64(v: i64, what: &str) -> Result<u64, StorageError> {
    u64::try_from(v)
        .map_err(|_| StorageError(format!("postgres: negative {what} in database: {v}")))
}

fn device_record(r: &Row) -> Result<DeviceRecord, StorageError> {
    let id: String = r.try_get(0).map_err(pg)?;
    let alg: String = r.try_get(1).map_err(pg)?;
    let key: Vec<u8> = r.try_get(2).map_err(pg)?;
    let revoked: bool = r.try_get(3).map_err(pg)?;
    let created_ms: i64 = r.try_get(4).map_err(pg)?;
    let last_seen_ms: Option<i64> = r.try_get(5).map_err(pg)?;
    let readings: i64 = r.try_get(6).map_err(pg)?;
    let alg = alg.parse().map_err(|_| {
        StorageError(format!(
            "postgres: device {id:?} has an unknown algorithm {alg:?}"
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

pub(super) async fn device(c: &ReadConn, id: &str) -> Result<Option<DeviceRecord>, StorageError> {
    let row = c.client.query_opt(&c.device, &[&id]).await.map_err(pg)?;
    row.as_ref().map(device_record).transpose()
}

pub(super) async fn devices(c: &ReadConn) -> Result<Vec<DeviceRecord>, StorageError> {
    let rows = c.client.query(&c.devices, &[]).await.map_err(pg)?;
    rows.iter().map(device_record).collect()
}

pub(super) async fn count_readings(c: &ReadConn) -> Result<u64, StorageError> {
    let n: i64 = c
        .client
        .query_one(&c.count, &[])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    to_u64(n, "readings count")
}

pub(super) async fn readings(
    c: &ReadConn,
    q: &ReadingQuery,
) -> Result<Vec<StoredReading>, StorageError> {
    let limit = i64::from(q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT));
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
    let rows = c
        .client
        .query(&c.readings, &[&q.device_id, &from, &to_inclusive, &limit])
        .await
        .map_err(pg)?;
    let mut scratch = Vec::new();
    rows.iter()
        .map(|row| {
            let msg_id: i64 = row.try_get(0).map_err(pg)?;
            let device_time_ms: i64 = row.try_get(1).map_err(pg)?;
            let received_ms: i64 = row.try_get(2).map_err(pg)?;
            let payload: &[u8] = row.try_get(3).map_err(pg)?;
            let r = stored_reading(
                &q.device_id,
                to_u64(received_ms, "received_ms")?,
                payload,
                &mut scratch,
            )
            .map_err(|e| StorageError(format!("postgres: {}", e.0)))?;
            if Ok(r.msg_id) != u64::try_from(msg_id)
                || Ok(r.device_time_ms) != u64::try_from(device_time_ms)
            {
                return Err(StorageError(format!(
                    "postgres: reading {msg_id} of {:?}: its payload names another message",
                    q.device_id
                )));
            }
            Ok(r)
        })
        .collect()
}

pub(super) async fn session_events(
    c: &ReadConn,
    limit: u32,
) -> Result<Vec<SessionEvent>, StorageError> {
    let limit = i64::from(limit.min(MAX_LIMIT));
    let rows = c.client.query(&c.events, &[&limit]).await.map_err(pg)?;
    rows.iter()
        .map(|r| {
            let at_ms: i64 = r.try_get(0).map_err(pg)?;
            let session_id: i64 = r.try_get(2).map_err(pg)?;
            Ok(SessionEvent {
                at_ms: to_u64(at_ms, "at_ms")?,
                device_id: r.try_get(1).map_err(pg)?,
                session_id: u32::try_from(session_id).map_err(|_| {
                    StorageError(format!("postgres: session id {session_id} out of range"))
                })?,
                event: r.try_get(3).map_err(pg)?,
                suite: r.try_get(4).map_err(pg)?,
            })
        })
        .collect()
}
