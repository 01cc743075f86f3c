//! The checkpointer thread: copies committed WAL frames into the database file off the
//! writer's thread. The write connection runs with `wal_autocheckpoint = 0`, so a commit never
//! pays for a checkpoint (it did every ~1,000 pages: 6% of the writer's time under load).
//!
//! Every `interval` it runs a PASSIVE checkpoint on its own connection: it never blocks the
//! writer or the readers, copies what no reader still needs, and lets the writer restart the
//! WAL from its beginning once everything is copied. It changes nothing about durability: a
//! commit is durable in the WAL before it is acknowledged, with or without checkpoints.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::db;
use crate::storage::StorageError;

/// The running checkpointer; dropping it stops the thread (after at most one checkpoint).
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a connection to `path` (which must exist) and starts checkpointing it every
    /// `interval`.
    pub(super) fn start(
        path: &Path,
        busy_timeout: Duration,
        interval: Duration,
    ) -> Result<Self, StorageError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| StorageError(format!("sqlite: cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(busy_timeout).map_err(db)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("iotseal-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped, interval))
            .map_err(|e| StorageError(format!("cannot start the sqlite checkpointer: {e}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("sqlite: the checkpointer thread panicked");
        }
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>, interval: Duration) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
        if let Err(e) = checkpoint(conn) {
            tracing::warn!("sqlite: checkpoint failed: {e}");
        }
    }
}

/// One PASSIVE checkpoint: (frames in the WAL, frames copied into the database).
pub(super) fn checkpoint(conn: &Connection) -> Result<(i64, i64), StorageError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
    .map_err(db)
}
