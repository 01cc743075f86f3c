//! PostgreSQL storage: the backend for several gateways sharing one store.
//!
//! Selected with `storage = "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAMS]"` in
//! `gateway.toml` (the `postgresql://` scheme and every parameter of libpq-style URLs that
//! `tokio-postgres` understands are accepted; `?options=-c%20search_path%3DNAME` selects a
//! schema). It follows the same rules as the SQLite backend (see [`super`]).
//!
//! # Design
//!
//! - A **background thread** runs a single-threaded tokio runtime that drives every connection
//!   of the storage (so the storage works whichever runtime its callers use, and dropping it
//!   can wait for the queued writes like [`super::sqlite::SqliteStorage`]).
//! - **One write connection**, owned by the writer task on that thread. Every write (readings,
//!   devices, touches, audit events) is a request sent to it over a bounded channel. It drains
//!   every request waiting (up to [`PgOptions::max_batch`] readings), runs them in one
//!   transaction and commits once, then replies to each caller: group commit. A caller gets
//!   `Ok` only after `COMMIT` returned, so an acknowledged reading is durable as far as the
//!   server's `synchronous_commit` setting makes commits durable (on by default).
//! - Each request runs inside its own **savepoint**: a request that fails (readings of an
//!   unknown device, a duplicate registration) is rolled back alone and only its caller gets
//!   the error. An error that ends the transaction (a failed `COMMIT`, a deferred constraint,
//!   a lost connection) fails every request of the batch. A request that hits a deadlock or a
//!   serialization failure (possible only when several gateways write to the same database) is
//!   retried inside its savepoint a few times.
//! - Readings are inserted with `INSERT ... ON CONFLICT (device_id, msg_id) DO NOTHING
//!   RETURNING`: the rows returned are the readings inserted, the others are duplicates
//!   (stored before, by this gateway or another one). The device counters are updated in the
//!   same statement. The rows travel as arrays (`unnest`), the readings of every call of a
//!   batch in one statement, and the statements of a batch are pipelined: a batch costs a few
//!   round trips plus its `COMMIT` whatever its size (details in `postgres/writer.rs`).
//! - **Reads** use a small pool of read-only connections ([`PgOptions::read_connections`]);
//!   each query is one statement, so it sees one consistent snapshot.
//! - A write connection that breaks (server restart, network) fails the batch in flight (the
//!   devices retransmit; retransmissions are deduplicated) and is reopened for the next batch.
//!
//! # Schema
//!
//! The same tables, columns and keys as the SQLite backend, with PostgreSQL types (`text`,
//! `bigint`, `bytea`, `boolean`, `double precision`), and the same version numbers: table
//! `schema_version` holds the application name and the number of migrations applied. Tables
//! are created in the connection's current schema (the first existing schema of its
//! `search_path`). Migrations run in one transaction at open under an advisory lock, so
//! several gateways starting at once migrate once. A schema written by a newer build, or a
//! schema holding tables that iotseal did not create, is refused.

mod reader;
mod schema;
mod tls;
mod writer;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use self::reader::Readers;
use self::writer::{Answer, DeviceRow, EventRow, Op, ReadingRow, Request};
use super::{
    BoxFuture, DeviceRecord, NewReading, ReadingQuery, SessionEvent, Storage, StorageError,
    StoreOutcome, StoredReading, check_payload,
};

/// Options of [`PgStorage::connect`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgOptions {
    /// Most readings committed in one transaction (default 4096). A single call with more
    /// readings still commits in one transaction of its own.
    pub max_batch: usize,
    /// Most read connections open at once (default 4).
    pub read_connections: usize,
    /// Requests queued for the writer before callers wait for room (default 1024).
    pub queue_capacity: usize,
    /// Connection timeout when the URL sets none (default 10 s).
    pub connect_timeout: Duration,
    /// false sets `synchronous_commit=off` on the writer's connection: commits are
    /// acknowledged before the server's WAL reaches the disk (see `StorageSync::Normal`).
    /// Default true: the server's own setting applies.
    pub synchronous_commit: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            read_connections: 4,
            queue_capacity: 1024,
            connect_timeout: Duration::from_secs(10),
            synchronous_commit: true,
        }
    }
}

/// Storage in a PostgreSQL database. See the [module documentation](self).
///
/// Dropping it stops the writer after it has committed every request already queued; the drop
/// blocks until then.
pub struct PgStorage {
    target: String,
    writer: Option<mpsc::Sender<Op>>,
    thread: Option<JoinHandle<()>>,
    readers: Arc<Readers>,
    pending: AtomicUsize,
}

impl fmt::Debug for PgStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStorage")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Maps a PostgreSQL error (with the server's message when there is one).
fn pg(e: tokio_postgres::Error) -> StorageError {
    match e.as_db_error() {
        Some(db) => {
            let mut msg = format!("postgres: {}", db.message());
            if let Some(detail) = db.detail() {
                msg.push_str(&format!(" ({detail})"));
            }
            StorageError(msg)
        }
        None => match std::error::Error::source(&e) {
            Some(cause) => StorageError(format!("postgres: {e}: {cause}")),
            None => StorageError(format!("postgres: {e}")),
        },
    }
}

fn to_i64(v: u64, what: &str) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError(format!("{what} {v} is out of range (max 2^63-1)")))
}

/// PostgreSQL `text` cannot hold NUL characters: refuse them with a clear message.
fn check_text(v: &str, what: &str) -> Result<(), StorageError> {
    if v.contains('\0') {
        return Err(StorageError(format!(
            "{what} {v:?} contains a NUL character"
        )));
    }
    Ok(())
}

/// `user@host:port/db` of a configuration, for messages and logs (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}

impl PgStorage {
    /// The schema version this build creates (the same numbering as the SQLite backend).
    pub const SCHEMA_VERSION: u32 = schema::LATEST;

    /// Connects to the database `url` names, applies pending migrations and starts the
    /// writer. Fails if the database cannot be reached, the schema is newer than this build
    /// or holds tables iotseal did not create.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, StorageError> {
        let config = schema::config(url, &options)?;
        let target = describe(&config.config);
        let (tx, rx) = mpsc::channel(options.queue_capacity.max(1));
        let (ready_tx, ready_rx) = oneshot::channel();
        let max_batch = options.max_batch;
        let mut writer_config = config.clone();
        if !options.synchronous_commit {
            writer_config.config.options("-c synchronous_commit=off");
        }
        let thread = std::thread::Builder::new()
            .name("iotseal-postgres".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StorageError(format!(
                            "postgres: cannot start a runtime: {e}"
                        ))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let w = match writer::Writer::open(writer_config).await {
                        Ok(w) => w,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    if ready_tx
                        .send(Ok(tokio::runtime::Handle::current()))
                        .is_err()
                    {
                        return;
                    }
                    writer::run(w, rx, max_batch).await;
                });
            })
            .map_err(|e| StorageError(format!("postgres: cannot start the writer thread: {e}")))?;
        let handle = match ready_rx.await {
            Ok(Ok(handle)) => handle,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(StorageError(format!("{} ({target})", e.0)));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StorageError("postgres: the writer thread stopped".into()));
            }
        };
        let readers = Arc::new(Readers::new(config, handle, options.read_connections));
        let this = Self {
            target,
            writer: Some(tx),
            thread: Some(thread),
            readers,
            pending: AtomicUsize::new(0),
        };
        // One reader now, so a database readers cannot use fails here rather than later.
        this.readers.get().await?;
        Ok(this)
    }

    /// `user@host:port/database` (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The most recent entries of the session audit trail, newest first (at most `limit`,
    /// bounded to 100,000).
    pub async fn session_events(&self, limit: u32) -> Result<Vec<SessionEvent>, StorageError> {
        let c = self.readers.get().await?;
        reader::session_events(&c, limit).await
    }

    /// Sends a request to the writer and waits for its reply (after the commit).
    /// Test hook: requests handed to the writer and not answered yet (a caller waiting for
    /// room in the queue included).
    #[doc(hidden)]
    pub fn dangerous_pending_requests(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Test hook: the schema's migration scripts (script `i` takes version `i` to `i + 1`; the
    /// `schema_version` table is the storage's own), to build a schema of an earlier version.
    #[doc(hidden)]
    pub const DANGEROUS_MIGRATIONS: &'static [&'static str] = schema::MIGRATIONS;

    async fn submit(&self, request: Request) -> Result<Answer, StorageError> {
        let Some(writer) = &self.writer else {
            return Err(StorageError("postgres: storage is closed".into()));
        };
        let (reply, rx) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::SeqCst);
        let _answered = Pending(&self.pending);
        writer
            .send(Op { request, reply })
            .await
            .map_err(|_| StorageError("postgres: the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StorageError("postgres: the writer stopped before committing".into()))?
    }
}

/// Counts a request out of [`PgStorage::dangerous_pending_requests`] when dropped.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for PgStorage {
    fn drop(&mut self) {
        // Closing the channel ends the writer's loop once the queue is drained; the thread's
        // runtime then closes every connection.
        drop(self.writer.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("postgres: the writer thread panicked");
        }
    }
}

fn reading_row(r: NewReading, scratch: &mut Vec<u8>) -> Result<ReadingRow, StorageError> {
    check_payload(&r, scratch)?;
    Ok(ReadingRow {
        msg_id: to_i64(r.msg_id, "msg_id")?,
        device_time_ms: to_i64(r.device_time_ms, "device_time_ms")?,
        received_ms: to_i64(r.received_ms, "received_ms")?,
        device_id: r.device_id,
        payload: r.payload,
    })
}

fn device_row(d: DeviceRecord) -> Result<DeviceRow, StorageError> {
    if d.id.is_empty() || d.id.len() > 32 {
        return Err(StorageError(format!(
            "device id must be 1 to 32 bytes, got {}",
            d.id.len()
        )));
    }
    check_text(&d.id, "device id")?;
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

fn unexpected(a: &Answer) -> StorageError {
    StorageError(format!(
        "postgres: unexpected answer from the writer: {a:?}"
    ))
}

impl Storage for PgStorage {
    fn store_readings(
        &self,
        readings: Vec<NewReading>,
    ) -> BoxFuture<'_, Result<StoreOutcome, StorageError>> {
        Box::pin(async move {
            if readings.is_empty() {
                return Ok(StoreOutcome::default());
            }
            // Checked before queueing: a bad call must not fail the others of its batch.
            let mut scratch = Vec::new();
            let readings = readings
                .into_iter()
                .map(|r| reading_row(r, &mut scratch))
                .collect::<Result<Vec<_>, _>>()?;
            match self.submit(Request::Store(readings)).await? {
                Answer::Stored(o) => Ok(o),
                a => Err(unexpected(&a)),
            }
        })
    }

    fn add_device(&self, device: DeviceRecord) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let device = device_row(device)?;
            match self.submit(Request::AddDevice(device)).await? {
                Answer::Done => Ok(()),
                a => Err(unexpected(&a)),
            }
        })
    }

    fn revoke_device(&self, id: String) -> BoxFuture<'_, Result<bool, StorageError>> {
        Box::pin(async move {
            if id.contains('\0') {
                return Ok(false);
            }
            match self.submit(Request::Revoke(id)).await? {
                Answer::Changed(b) => Ok(b),
                a => Err(unexpected(&a)),
            }
        })
    }

    fn device(&self, id: String) -> BoxFuture<'_, Result<Option<DeviceRecord>, StorageError>> {
        Box::pin(async move {
            if id.contains('\0') {
                return Ok(None);
            }
            let c = self.readers.get().await?;
            reader::device(&c, &id).await
        })
    }

    fn devices(&self) -> BoxFuture<'_, Result<Vec<DeviceRecord>, StorageError>> {
        Box::pin(async move {
            let c = self.readers.get().await?;
            reader::devices(&c).await
        })
    }

    /// Moves `last_seen_ms` forward to `at_ms` (never back). Unknown devices are ignored.
    fn touch_device(&self, id: String, at_ms: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let at_ms = to_i64(at_ms, "at_ms")?;
            if id.contains('\0') {
                return Ok(());
            }
            match self.submit(Request::Touch(id, at_ms)).await? {
                Answer::Done => Ok(()),
                a => Err(unexpected(&a)),
            }
        })
    }

    fn readings(&self, q: ReadingQuery) -> BoxFuture<'_, Result<Vec<StoredReading>, StorageError>> {
        Box::pin(async move {
            if q.device_id.contains('\0') {
                return Ok(Vec::new());
            }
            let c = self.readers.get().await?;
            reader::readings(&c, &q).await
        })
    }

    fn count_readings(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        Box::pin(async move {
            let c = self.readers.get().await?;
            reader::count_readings(&c).await
        })
    }

    fn session_event(&self, ev: SessionEvent) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            // The audit trail must not fail on odd names: NULs are replaced.
            let clean = |s: String| {
                if s.contains('\0') {
                    s.replace('\0', "\u{FFFD}")
                } else {
                    s
                }
            };
            let event = EventRow {
                at_ms: to_i64(ev.at_ms, "at_ms")?,
                device_id: ev.device_id.map(clean),
                session_id: i64::from(ev.session_id),
                event: clean(ev.event),
                suite: clean(ev.suite),
            };
            match self.submit(Request::Event(event)).await? {
                Answer::Done => Ok(()),
                a => Err(unexpected(&a)),
            }
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            match self.submit(Request::Flush).await? {
                Answer::Done => Ok(()),
                a => Err(unexpected(&a)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_schema_versions_as_sqlite() {
        // A migration added to one backend must be added to the other.
        assert_eq!(
            PgStorage::SCHEMA_VERSION,
            super::super::sqlite::SqliteStorage::SCHEMA_VERSION
        );
    }

    #[test]
    fn urls_are_parsed_and_described_without_password() {
        let c = schema::config(
            "postgres://gw:secret@db.example:6543/iot?options=-c%20search_path%3Dgw1",
            &PgOptions::default(),
        )
        .unwrap()
        .config;
        assert_eq!(describe(&c), "gw@db.example:6543/iot");
        assert_eq!(c.get_options(), Some("-c search_path=gw1"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert_eq!(c.get_application_name(), Some("iotseal-gateway"));
        let c = schema::config(
            "postgresql://gw@h/iot?connect_timeout=3&application_name=x",
            &PgOptions::default(),
        )
        .unwrap()
        .config;
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(c.get_application_name(), Some("x"));
        let Err(err) = schema::config("postgres://h:notaport/x", &PgOptions::default()) else {
            panic!("a bad port must be refused");
        };
        assert!(!err.0.is_empty());
        assert!(schema::config("sqlite:x", &PgOptions::default()).is_err());
    }

    #[test]
    fn nul_characters_are_refused() {
        let mut d = DeviceRecord {
            id: "a\0b".into(),
            alg: iotseal_proto::SigAlg::Ed25519,
            public_key_hex: "01".into(),
            revoked: false,
            created_ms: 0,
            last_seen_ms: None,
            readings: 0,
        };
        let Err(e) = device_row(d.clone()) else {
            panic!("a NUL in a device id must be refused")
        };
        assert!(e.0.contains("NUL"), "{e}");
        d.id = "ab".into();
        assert!(device_row(d).is_ok());
    }
}
