//! SQLite storage: the embedded default backend.
//!
//! # Design
//!
//! - **One writer thread** owns the only write connection. Every write (readings, devices,
//!   touches, audit events) is a request sent to it over a bounded channel. It drains every
//!   request waiting (up to [`SqliteOptions::max_batch`] readings), runs them in one
//!   transaction and commits once, then replies to each caller with its own result: group
//!   commit, so the cost of the `fsync` is shared by every concurrent caller.
//! - Each request runs inside its own savepoint: a request that fails (for example readings of
//!   an unknown device) is rolled back alone and only its caller gets the error. An error that
//!   ends the transaction (a failed `COMMIT`, I/O error, disk full) fails every request of the
//!   batch. Either way a call's writes are all committed or none are.
//! - **Reads** use a small pool of read-only connections from `spawn_blocking`; WAL lets them
//!   run while the writer writes, and they see every commit acknowledged before they start.
//! - Readings are deduplicated by (device id, message id): a call's ids that a stored chunk
//!   already holds are counted as duplicates and not written again (see *Tables*).
//!
//! # Durability
//!
//! The file uses WAL. With `synchronous=FULL` (the default, [`SqliteOptions::synchronous_full`])
//! every commit is fsynced before [`Storage::store_readings`] returns, so an acknowledged
//! reading survives a process crash *and* a power loss or kernel panic. With
//! `synchronous=NORMAL` the WAL is synced only at checkpoints: commits are still atomic and
//! survive a process crash (the data is in the OS page cache), but the last transactions before
//! a power loss may be lost *after* they were acknowledged, so a device would not retransmit
//! them. NORMAL is faster (no fsync per group commit); choose it only where that loss is
//! acceptable.
//!
//! # Schema
//!
//! Versioned by `PRAGMA user_version` (see [`SqliteStorage::SCHEMA_VERSION`]); migrations are
//! applied in one transaction at open. A file written by a newer build, or an SQLite file that
//! is not an iotseal database, is refused.
//!
//! Tables (schema versions 4 to 6, docs/decisions.md D11, D14, D37): `devices` (integer `key`,
//! unique text `id`), `reading_chunks`, `reading_inbox` and `session_events`. A chunk is one
//! device's run of consecutive message ids (at most 1,024 readings within 10 minutes of device
//! time): `first_msg`, `last_msg`, `t_min`, `t_max` and a BLOB `body` with one element per
//! reading: its payload as received (the encoded reading: message id, device time, values) and
//! its receive time (see the `chunk` module). The values are stored once, in the payload, and
//! decoded when read. Chunks of a device never share an id: deduplication probes the chunk with
//! the largest `first_msg` at or below an id. A record of 100 readings costs the writer one row
//! and two index entries. Runs of fewer than 32 readings go to `reading_inbox` instead (same
//! columns, no secondary index, its id ranges kept in memory by the writer), which the writer
//! merges into `reading_chunks` in steps, joining each device's consecutive runs: a commit of
//! one-reading records from many devices then writes a few pages instead of an index page per
//! device. Views keep version 1's names for SQL users, over both tables: `readings`
//! (device_id, msg_id, device_time_ms, received_ms, payload) and `reading_values` (device_id,
//! msg_id, idx, sensor, value; one row per value); they expand a body with the SQL function
//! `iotseal_chunk_json`, registered on every connection of the storage (other clients:
//! [`SqliteStorage::register_sql_functions`]).

mod chunk;
mod inbox;
mod reader;
mod schema;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use self::reader::Readers;
use self::writer::{DeviceReadings, DeviceRow, ElementRef, EventRow, Op};
use super::{
    BoxFuture, DeviceRecord, NewReading, ReadingQuery, SessionEvent, Storage, StorageError,
    StoreOutcome, StoredReading, check_payload,
};

/// Options of [`SqliteStorage::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `PRAGMA synchronous=FULL` (default, true): every commit is fsynced. false selects
    /// `NORMAL`: faster, still crash-safe for the process, but commits acknowledged just before
    /// a power loss may be lost (see the module documentation).
    pub synchronous_full: bool,
    /// Most readings committed in one transaction (default 4096). A single call with more
    /// readings still commits in one transaction of its own.
    pub max_batch: usize,
    /// How long a connection waits for a lock held by another connection or process before
    /// failing with "database is locked" (default 5 s).
    pub busy_timeout: Duration,
    /// Most read connections open at once (default 4).
    pub read_connections: usize,
    /// Requests queued for the writer before callers wait for room (default 1024).
    pub queue_capacity: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous_full: true,
            max_batch: 4096,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            queue_capacity: 1024,
        }
    }
}

/// Storage in one SQLite file. See the [module documentation](self).
///
/// Dropping it stops the writer thread after it has committed every request already queued;
/// the drop blocks until then.
pub struct SqliteStorage {
    path: PathBuf,
    writer: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    pending: AtomicUsize,
}

impl fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStorage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Maps an SQLite error.
fn db(e: rusqlite::Error) -> StorageError {
    StorageError(format!("sqlite: {e}"))
}

fn to_i64(v: u64, what: &str) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError(format!("{what} {v} is out of range (max 2^63-1)")))
}

impl SqliteStorage {
    /// The schema version this build creates (`PRAGMA user_version` of its files).
    pub const SCHEMA_VERSION: u32 = schema::LATEST;

    /// Opens (creating it and its parent directory if needed) the database at `path`, applies
    /// pending migrations and starts the writer thread.
    ///
    /// This blocks on file I/O; from async code call it in `spawn_blocking` if that matters.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, StorageError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StorageError(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let conn = schema::open_writer(path, options.synchronous_full, options.busy_timeout)?;
        // Open one reader now, so a file readers cannot open fails here rather than later.
        let first_reader = schema::open_reader(path, options.busy_timeout)?;
        let readers = Readers::new(
            path.to_path_buf(),
            options.busy_timeout,
            options.read_connections,
            first_reader,
        );
        let inbox = inbox::Inbox::load(&conn)?;
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let max_batch = options.max_batch;
        let thread = std::thread::Builder::new()
            .name("iotseal-sqlite-writer".into())
            .spawn(move || writer::run(conn, inbox, rx, max_batch))
            .map_err(|e| StorageError(format!("cannot start the sqlite writer thread: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Some(tx),
            thread: Some(thread),
            readers: Arc::new(readers),
            pending: AtomicUsize::new(0),
        })
    }

    /// Registers on `conn` the SQL function the views `readings` and `reading_values` need
    /// (`iotseal_chunk_json`, docs/decisions.md D37): for tools that open the file with
    /// rusqlite themselves. Every connection of this storage has it.
    pub fn register_sql_functions(conn: &rusqlite::Connection) -> Result<(), StorageError> {
        chunk::register_functions(conn)
    }

    /// Test hook: requests handed to the writer and not answered yet (a caller waiting for
    /// room in the queue included).
    #[doc(hidden)]
    pub fn dangerous_pending_requests(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves every row of the inbox (docs/decisions.md D14) into `reading_chunks` now and
    /// returns how many rows; the writer does this on its own in steps, and at close. For
    /// maintenance and tests: queries see the same readings before and after.
    pub async fn merge_inbox(&self) -> Result<usize, StorageError> {
        self.submit(|reply| Op::MergeInbox { reply }).await
    }

    /// The most recent entries of the session audit trail, newest first (at most `limit`,
    /// bounded to 100,000).
    pub async fn session_events(&self, limit: u32) -> Result<Vec<SessionEvent>, StorageError> {
        self.readers
            .run(move |c| reader::session_events(c, limit))
            .await
    }

    /// Sends a request to the writer and waits for its reply (after the commit).
    async fn submit<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Op,
    ) -> Result<T, StorageError> {
        let Some(writer) = &self.writer else {
            return Err(StorageError("sqlite: storage is closed".into()));
        };
        let (tx, rx) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::SeqCst);
        let _answered = Pending(&self.pending);
        writer
            .send(op(tx))
            .await
            .map_err(|_| StorageError("sqlite: the writer thread has stopped".into()))?;
        rx.await.map_err(|_| {
            StorageError("sqlite: the writer thread stopped before committing".into())
        })?
    }
}

/// Counts a request out of [`SqliteStorage::dangerous_pending_requests`] when dropped.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for SqliteStorage {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once the queue is drained.
        drop(self.writer.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("sqlite: the writer thread panicked");
        }
    }
}

/// Prepares a store call for the writer, on the caller's thread: the readings per device (in
/// first-seen order), sorted by message id (stable, so the first of equal ids stands, the
/// others counted as repeats), checked to fit SQLite's integers, each one's chunk-body element
/// written into its device's buffer.
fn device_readings(readings: Vec<NewReading>) -> Result<Vec<DeviceReadings>, StorageError> {
    let mut scratch = Vec::new();
    let mut groups: Vec<Vec<NewReading>> = Vec::new();
    for r in readings {
        check_payload(&r, &mut scratch)?;
        match groups.iter_mut().find(|g| g[0].device_id == r.device_id) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        g.sort_by_key(|r| r.msg_id);
        let size: usize = g.iter().map(|r| 12 + r.payload.len()).sum();
        let mut d = DeviceReadings {
            device_id: Arc::clone(&g[0].device_id),
            last_received: 0,
            repeats: 0,
            rows: Vec::with_capacity(g.len()),
            body: Vec::with_capacity(size),
        };
        let mut last: Option<u64> = None;
        for r in &g {
            let msg_id = to_i64(r.msg_id, "msg_id")?;
            let device_time_ms = to_i64(r.device_time_ms, "device_time_ms")?;
            let received_ms = to_i64(r.received_ms, "received_ms")?;
            d.last_received = d.last_received.max(received_ms);
            if last == Some(r.msg_id) {
                d.repeats += 1;
                continue;
            }
            last = Some(r.msg_id);
            chunk::push_element(&mut d.body, &r.payload, device_time_ms, received_ms);
            d.rows.push(ElementRef {
                msg_id,
                device_time_ms,
                end: d.body.len(),
            });
        }
        out.push(d);
    }
    Ok(out)
}

fn device_row(d: DeviceRecord) -> Result<DeviceRow, StorageError> {
    if d.id.is_empty() || d.id.len() > 32 {
        return Err(StorageError(format!(
            "device id must be 1 to 32 bytes, got {}",
            d.id.len()
        )));
    }
    let public_key = hex::decode(&d.public_key_hex)
        .map_err(|e| StorageError(format!("device {:?}: public key is not hex: {e}", d.id)))?;
    if public_key.is_empty() {
        return Err(StorageError(format!("device {:?}: empty public key", d.id)));
    }
    Ok(DeviceRow {
        alg: d.alg.name(),
        public_key,
        revoked: d.revoked,
        created_ms: to_i64(d.created_ms, "created_ms")?,
        last_seen_ms: d
            .last_seen_ms
            .map(|v| to_i64(v, "last_seen_ms"))
            .transpose()?,
        id: d.id,
    })
}

impl Storage for SqliteStorage {
    fn store_readings(
        &self,
        readings: Vec<NewReading>,
    ) -> BoxFuture<'_, Result<StoreOutcome, StorageError>> {
        Box::pin(async move {
            if readings.is_empty() {
                return Ok(StoreOutcome::default());
            }
            // Checked before queueing: a bad call must not fail the others of its batch.
            let devices = device_readings(readings)?;
            self.submit(|reply| Op::Store { devices, reply }).await
        })
    }

    fn add_device(&self, device: DeviceRecord) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let device = device_row(device)?;
            self.submit(|reply| Op::AddDevice { device, reply }).await
        })
    }

    fn revoke_device(&self, id: String) -> BoxFuture<'_, Result<bool, StorageError>> {
        Box::pin(async move { self.submit(|reply| Op::Revoke { id, reply }).await })
    }

    fn device(&self, id: String) -> BoxFuture<'_, Result<Option<DeviceRecord>, StorageError>> {
        Box::pin(async move { self.readers.run(move |c| reader::device(c, &id)).await })
    }

    fn devices(&self) -> BoxFuture<'_, Result<Vec<DeviceRecord>, StorageError>> {
        Box::pin(async move { self.readers.run(reader::devices).await })
    }

    /// Moves `last_seen_ms` forward to `at_ms` (never back). Unknown devices are ignored.
    fn touch_device(&self, id: String, at_ms: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let seen = vec![(id, to_i64(at_ms, "at_ms")?)];
            self.submit(|reply| Op::Touch { seen, reply }).await
        })
    }

    /// One write request, one transaction, for every device of the call.
    fn touch_devices(&self, seen: Vec<(String, u64)>) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            if seen.is_empty() {
                return Ok(());
            }
            let seen = seen
                .into_iter()
                .map(|(id, at)| Ok((id, to_i64(at, "at_ms")?)))
                .collect::<Result<Vec<_>, StorageError>>()?;
            self.submit(|reply| Op::Touch { seen, reply }).await
        })
    }

    fn readings(&self, q: ReadingQuery) -> BoxFuture<'_, Result<Vec<StoredReading>, StorageError>> {
        Box::pin(async move { self.readers.run(move |c| reader::readings(c, &q)).await })
    }

    fn count_readings(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(async move { self.readers.run(reader::count_readings).await })
    }

    fn session_event(&self, ev: SessionEvent) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let event = EventRow {
                at_ms: to_i64(ev.at_ms, "at_ms")?,
                device_id: ev.device_id,
                session_id: ev.session_id,
                event: ev.event,
                suite: ev.suite,
            };
            self.submit(|reply| Op::Event { event, reply }).await
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move { self.submit(|reply| Op::Flush { reply }).await })
    }
}
