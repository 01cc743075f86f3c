//! The writer thread: group commit over the single write connection.
//!
//! Requests arrive over a bounded channel. The thread takes one request (blocking), then every
//! request already waiting, up to `max_batch` readings, and runs them all in one `BEGIN
//! IMMEDIATE` transaction, each inside its own savepoint:
//!
//! - a request that fails (unknown device, duplicate registration, a constraint) is rolled back
//!   to its savepoint and only its caller gets the error; the others still commit;
//! - a failure that ends the transaction (a `COMMIT` that fails, I/O error, disk full, or any
//!   error after which SQLite rolled the transaction back itself) rolls back everything and every
//!   caller of the batch gets the error.
//!
//! Replies are sent only after `COMMIT` returned, so a caller that got `Ok` holds a durable
//! write (with `synchronous=FULL`), and a caller that got `Err` wrote nothing.

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::db;
use crate::storage::{StorageError, StoreOutcome};

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// A reading checked and converted for SQLite (all integers fit in i64), its values already
/// encoded as JSON (by the caller's thread, not the writer's).
pub(super) struct ReadingRow {
    pub(super) device_id: String,
    pub(super) msg_id: i64,
    pub(super) device_time_ms: i64,
    pub(super) received_ms: i64,
    pub(super) payload: Vec<u8>,
    pub(super) vals: String,
}

/// A device checked and converted for SQLite.
pub(super) struct DeviceRow {
    pub(super) id: String,
    pub(super) alg: &'static str,
    pub(super) public_key: Vec<u8>,
    pub(super) revoked: bool,
    pub(super) created_ms: i64,
    pub(super) last_seen_ms: Option<i64>,
}

/// A session event converted for SQLite.
pub(super) struct EventRow {
    pub(super) at_ms: i64,
    pub(super) device_id: Option<String>,
    pub(super) session_id: u32,
    pub(super) event: String,
    pub(super) suite: String,
}

/// One request to the writer thread.
pub(super) enum Op {
    Store {
        readings: Vec<ReadingRow>,
        reply: Reply<StoreOutcome>,
    },
    AddDevice {
        device: DeviceRow,
        reply: Reply<()>,
    },
    Revoke {
        id: String,
        reply: Reply<bool>,
    },
    /// Last-seen times (one device, or the sweeper's flush of many), in one savepoint.
    Touch {
        seen: Vec<(String, i64)>,
        reply: Reply<()>,
    },
    Event {
        event: EventRow,
        reply: Reply<()>,
    },
    /// Replies once everything queued before it is committed.
    Flush {
        reply: Reply<()>,
    },
}

impl Op {
    /// Share of the `max_batch` budget.
    fn weight(&self) -> usize {
        match self {
            Self::Store { readings, .. } => readings.len().max(1),
            Self::Touch { seen, .. } => seen.len().max(1),
            _ => 1,
        }
    }

    /// Runs the request on `conn` (inside its savepoint) and pairs the result with its reply.
    fn execute(self, conn: &Connection) -> Done {
        match self {
            Self::Store { readings, reply } => Done::Store(reply, store(conn, &readings)),
            Self::AddDevice { device, reply } => Done::Unit(reply, add_device(conn, &device)),
            Self::Revoke { id, reply } => Done::Bool(reply, revoke(conn, &id)),
            Self::Touch { seen, reply } => Done::Unit(
                reply,
                seen.iter().try_for_each(|(id, at)| touch(conn, id, *at)),
            ),
            Self::Event { event, reply } => Done::Unit(reply, session_event(conn, &event)),
            Self::Flush { reply } => Done::Unit(reply, Ok(())),
        }
    }

    /// The request could not run: pairs its reply with `err`.
    fn fail(self, err: &StorageError) -> Done {
        let e = || StorageError(err.0.clone());
        match self {
            Self::Store { reply, .. } => Done::Store(reply, Err(e())),
            Self::AddDevice { reply, .. }
            | Self::Touch { reply, .. }
            | Self::Event { reply, .. }
            | Self::Flush { reply } => Done::Unit(reply, Err(e())),
            Self::Revoke { reply, .. } => Done::Bool(reply, Err(e())),
        }
    }
}

/// A request that ran, waiting for the commit before its reply is sent.
enum Done {
    Store(Reply<StoreOutcome>, Result<StoreOutcome, StorageError>),
    Unit(Reply<()>, Result<(), StorageError>),
    Bool(Reply<bool>, Result<bool, StorageError>),
}

impl Done {
    fn is_ok(&self) -> bool {
        match self {
            Self::Store(_, r) => r.is_ok(),
            Self::Unit(_, r) => r.is_ok(),
            Self::Bool(_, r) => r.is_ok(),
        }
    }

    fn error(&self) -> Option<StorageError> {
        let msg = match self {
            Self::Store(_, Err(e)) | Self::Unit(_, Err(e)) | Self::Bool(_, Err(e)) => &e.0,
            _ => return None,
        };
        Some(StorageError(msg.clone()))
    }

    /// Sends the result (the caller may have gone away: its loss).
    fn send(self) {
        match self {
            Self::Store(tx, r) => drop(tx.send(r)),
            Self::Unit(tx, r) => drop(tx.send(r)),
            Self::Bool(tx, r) => drop(tx.send(r)),
        }
    }

    /// Replaces the result by `err` (the transaction did not commit) and sends it.
    fn send_err(self, err: &StorageError) {
        let e = || StorageError(err.0.clone());
        match self {
            Self::Store(tx, _) => drop(tx.send(Err(e()))),
            Self::Unit(tx, _) => drop(tx.send(Err(e()))),
            Self::Bool(tx, _) => drop(tx.send(Err(e()))),
        }
    }
}

/// The writer thread's body: runs until every sender is gone and the queue is drained.
pub(super) fn run(conn: Connection, mut rx: mpsc::Receiver<Op>, max_batch: usize) {
    let max_batch = max_batch.max(1);
    let mut carry: Option<Op> = None;
    let mut batch: Vec<Op> = Vec::new();
    loop {
        let first = match carry.take() {
            Some(op) => op,
            None => match rx.blocking_recv() {
                Some(op) => op,
                None => break,
            },
        };
        let mut weight = first.weight();
        batch.push(first);
        while weight < max_batch {
            let Ok(op) = rx.try_recv() else { break };
            let w = op.weight();
            if weight + w > max_batch {
                carry = Some(op);
                break;
            }
            weight += w;
            batch.push(op);
        }
        run_batch(&conn, batch.drain(..));
    }
    // Queue drained and closed: let SQLite refresh its statistics, then close (the last
    // connection to close checkpoints the WAL).
    if let Err(e) = conn.execute_batch("PRAGMA optimize") {
        tracing::debug!("sqlite: PRAGMA optimize at close failed: {e}");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!("sqlite: closing the write connection failed: {e}");
    }
}

/// Runs a cached parameterless statement (transaction control).
fn exec(conn: &Connection, sql: &str) -> Result<(), StorageError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(db)
}

/// One transaction for the whole batch; a savepoint per request.
fn run_batch(conn: &Connection, ops: impl ExactSizeIterator<Item = Op>) {
    let mut done: Vec<Done> = Vec::with_capacity(ops.len());
    let mut fatal: Option<StorageError> = exec(conn, "BEGIN IMMEDIATE").err();
    for op in ops {
        if let Some(err) = &fatal {
            done.push(op.fail(err));
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT op") {
            done.push(op.fail(&e));
            fatal = Some(e);
            continue;
        }
        let d = op.execute(conn);
        if d.is_ok() {
            if let Err(e) = exec(conn, "RELEASE op") {
                fatal = Some(e);
            }
        } else if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full, RAISE(ROLLBACK)
            // ...): the requests before this one are lost too.
            fatal = d.error();
        } else if let Err(e) = exec(conn, "ROLLBACK TO op").and_then(|()| exec(conn, "RELEASE op"))
        {
            fatal = Some(e);
        }
        done.push(d);
    }
    if fatal.is_none()
        && let Err(e) = exec(conn, "COMMIT")
    {
        fatal = Some(e);
    }
    match fatal {
        None => done.into_iter().for_each(Done::send),
        Some(err) => {
            if !conn.is_autocommit()
                && let Err(e) = exec(conn, "ROLLBACK")
            {
                tracing::error!("sqlite: rollback after a failed write batch failed: {e}");
            }
            tracing::warn!(
                requests = done.len(),
                "sqlite: write batch rolled back: {err}"
            );
            let err = StorageError(format!("{} (write transaction rolled back)", err.0));
            for d in done {
                d.send_err(&err);
            }
        }
    }
}

fn store(conn: &Connection, readings: &[ReadingRow]) -> Result<StoreOutcome, StorageError> {
    // Per device (by id, in first-seen order; a call rarely names more than one): its key,
    // readings inserted, latest receive time.
    let mut per_device: Vec<(&str, i64, i64, i64)> = Vec::new();
    let mut key_of = conn
        .prepare_cached("SELECT key FROM devices WHERE id = ?1")
        .map_err(db)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO reading_rows (device, msg_id, device_time_ms, received_ms, payload, vals) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (device, msg_id) DO NOTHING",
        )
        .map_err(db)?;
    let mut outcome = StoreOutcome::default();
    for r in readings {
        let i = match per_device.iter().position(|d| d.0 == r.device_id) {
            Some(i) => i,
            None => {
                let key: Option<i64> = key_of
                    .query_row([&r.device_id], |row| row.get(0))
                    .optional()
                    .map_err(db)?;
                let Some(key) = key else {
                    return Err(StorageError(format!("unknown device {:?}", r.device_id)));
                };
                per_device.push((&r.device_id, key, 0, r.received_ms));
                per_device.len() - 1
            }
        };
        let d = &mut per_device[i];
        d.3 = d.3.max(r.received_ms);
        let changed = insert
            .execute(params![
                d.1,
                r.msg_id,
                r.device_time_ms,
                r.received_ms,
                r.payload,
                r.vals
            ])
            .map_err(db)?;
        if changed == 0 {
            outcome.duplicates += 1;
        } else {
            outcome.inserted += 1;
            d.2 += 1;
        }
    }

    let mut update = conn
        .prepare_cached(
            "UPDATE devices SET readings = readings + ?1, \
             last_seen_ms = max(coalesce(last_seen_ms, ?2), ?2) WHERE key = ?3",
        )
        .map_err(db)?;
    for (_, key, inserted, last_received) in per_device {
        update
            .execute(params![inserted, last_received, key])
            .map_err(db)?;
    }
    Ok(outcome)
}

fn add_device(conn: &Connection, d: &DeviceRow) -> Result<(), StorageError> {
    let mut by_id = conn
        .prepare_cached("SELECT 1 FROM devices WHERE id = ?1")
        .map_err(db)?;
    if by_id.exists([&d.id]).map_err(db)? {
        return Err(StorageError(format!(
            "device {:?} is already registered",
            d.id
        )));
    }
    let mut by_key = conn
        .prepare_cached("SELECT id FROM devices WHERE public_key = ?1")
        .map_err(db)?;
    let owner: Option<String> = by_key
        .query_row([&d.public_key], |r| r.get(0))
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(db(e)),
        })?;
    if let Some(owner) = owner {
        return Err(StorageError(format!(
            "public key is already registered (device {owner:?})"
        )));
    }
    conn.prepare_cached(
        "INSERT INTO devices (id, alg, public_key, revoked, created_ms, last_seen_ms, readings) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
    )
    .and_then(|mut s| {
        s.execute(params![
            d.id,
            d.alg,
            d.public_key,
            d.revoked,
            d.created_ms,
            d.last_seen_ms
        ])
    })
    .map(drop)
    .map_err(db)
}

fn revoke(conn: &Connection, id: &str) -> Result<bool, StorageError> {
    conn.prepare_cached("UPDATE devices SET revoked = 1 WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .map(|n| n > 0)
        .map_err(db)
}

fn touch(conn: &Connection, id: &str, at_ms: i64) -> Result<(), StorageError> {
    conn.prepare_cached(
        "UPDATE devices SET last_seen_ms = max(coalesce(last_seen_ms, ?2), ?2) WHERE id = ?1",
    )
    .and_then(|mut s| s.execute(params![id, at_ms]))
    .map(drop)
    .map_err(db)
}

fn session_event(conn: &Connection, e: &EventRow) -> Result<(), StorageError> {
    conn.prepare_cached(
        "INSERT INTO session_events (at_ms, device_id, session_id, event, suite) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            e.at_ms,
            e.device_id,
            e.session_id,
            e.event,
            e.suite
        ])
    })
    .map(drop)
    .map_err(db)
}
