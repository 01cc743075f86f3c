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
//!
//! # Checkpoints
//!
//! SQLite's automatic checkpoint runs *inside* the commit that crosses its threshold, so the
//! callers of that batch wait for it (copying the WAL into the main file and an `fsync` of
//! it). The writer replaces it ([`Connection::wal_hook`] turns it off): it checkpoints
//! (`PASSIVE`, on the same connection, so it always catches up and the next transaction
//! rewinds the WAL) *after* the batch's replies are sent, when the WAL holds
//! [`CHECKPOINT_BYTES`] and no request is waiting, or [`CHECKPOINT_FORCE_BYTES`]
//! whatever is waiting. A checkpoint on another connection cannot bound the WAL under
//! continuous writes (docs/performance.md), so it stays on this thread.
//!
//! # Inbox merges and what the writer remembers
//!
//! Short runs of readings go to the inbox (see the `inbox` module, decision D14). After a
//! batch's replies, before the checkpoint, the writer moves inbox rows into `reading_chunks` in
//! a transaction of its own when due ([`MERGE_ROWS`] when no request waits,
//! [`MERGE_FORCE_ROWS`] regardless). Its [`State`] also remembers device keys and, per device,
//! a bound on the message ids of its chunks, so a one-reading request above that bound costs
//! no lookup and no index probe; every rollback reverts or conservatively forgets what it
//! touched.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::sync::Arc;

use rusqlite::hooks::Wal;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use super::db;
use super::inbox::{Inbox, MERGE_FORCE_ROWS, MERGE_ROWS, MERGE_STEP};
use super::schema::{CHUNK_MAX_READINGS, CHUNK_SPAN_MS, INBOX_BELOW, INSERT_CHUNK, INSERT_INBOX};
use crate::{StorageError, StoreOutcome};

type Reply<T> = oneshot::Sender<Result<T, StorageError>>;

/// One device's readings of a store call, prepared by the caller's thread (not the writer's):
/// converted for SQLite (all integers fit in i64), sorted by message id with the call's own
/// duplicates removed (the first of equal ids stands), and each reading's chunk-body element
/// (see the `chunk` module) written into one buffer, so a chunk's body is one slice of it.
pub(super) struct DeviceReadings {
    pub(super) device_id: Arc<str>,
    /// The latest receive time among the readings.
    pub(super) last_received: i64,
    /// Readings of the call dropped as repeats of an id earlier in the same call.
    pub(super) repeats: usize,
    /// The readings, in message id order.
    pub(super) rows: Vec<ElementRef>,
    /// The elements back to back.
    pub(super) body: Vec<u8>,
}

/// One reading of [`DeviceReadings`]: its ids and where its element ends in the body.
#[derive(Clone, Copy)]
pub(super) struct ElementRef {
    pub(super) msg_id: i64,
    pub(super) device_time_ms: i64,
    /// End (exclusive) of the element in the body; it starts where the previous one ends.
    pub(super) end: usize,
}

impl DeviceReadings {
    /// The chunk body of `rows[range]`.
    fn chunk_body(&self, range: std::ops::Range<usize>) -> &[u8] {
        let start = match range.start {
            0 => 0,
            i => self.rows[i - 1].end,
        };
        &self.body[start..self.rows[range.end - 1].end]
    }
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
        devices: Vec<DeviceReadings>,
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
    /// Moves every inbox row into `reading_chunks`; replies with how many rows.
    MergeInbox {
        reply: Reply<usize>,
    },
}

impl Op {
    /// Share of the `max_batch` budget.
    fn weight(&self) -> usize {
        match self {
            Self::Store { devices, .. } => {
                devices.iter().map(|d| d.rows.len()).sum::<usize>().max(1)
            }
            Self::Touch { seen, .. } => seen.len().max(1),
            _ => 1,
        }
    }

    /// Runs the request on `conn` (inside its savepoint) and pairs the result with its reply.
    fn execute(self, conn: &Connection, st: &mut State) -> Done {
        match self {
            Self::Store { devices, reply } => Done::Store(reply, store(conn, st, &devices)),
            Self::AddDevice { device, reply } => Done::Unit(reply, add_device(conn, &device)),
            Self::Revoke { id, reply } => Done::Bool(reply, revoke(conn, &id)),
            Self::Touch { seen, reply } => Done::Unit(
                reply,
                seen.iter().try_for_each(|(id, at)| touch(conn, id, *at)),
            ),
            Self::Event { event, reply } => Done::Unit(reply, session_event(conn, &event)),
            Self::Flush { reply } => Done::Unit(reply, Ok(())),
            Self::MergeInbox { reply } => Done::Count(reply, merge_all(conn, st)),
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
            Self::MergeInbox { reply } => Done::Count(reply, Err(e())),
        }
    }
}

/// A request that ran, waiting for the commit before its reply is sent.
enum Done {
    Store(Reply<StoreOutcome>, Result<StoreOutcome, StorageError>),
    Unit(Reply<()>, Result<(), StorageError>),
    Bool(Reply<bool>, Result<bool, StorageError>),
    Count(Reply<usize>, Result<usize, StorageError>),
}

impl Done {
    fn is_ok(&self) -> bool {
        match self {
            Self::Store(_, r) => r.is_ok(),
            Self::Unit(_, r) => r.is_ok(),
            Self::Bool(_, r) => r.is_ok(),
            Self::Count(_, r) => r.is_ok(),
        }
    }

    fn error(&self) -> Option<StorageError> {
        let msg = match self {
            Self::Store(_, Err(e))
            | Self::Unit(_, Err(e))
            | Self::Bool(_, Err(e))
            | Self::Count(_, Err(e)) => &e.0,
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
            Self::Count(tx, r) => drop(tx.send(r)),
        }
    }

    /// Replaces the result by `err` (the transaction did not commit) and sends it.
    fn send_err(self, err: &StorageError) {
        let e = || StorageError(err.0.clone());
        match self {
            Self::Store(tx, _) => drop(tx.send(Err(e()))),
            Self::Unit(tx, _) => drop(tx.send(Err(e()))),
            Self::Bool(tx, _) => drop(tx.send(Err(e()))),
            Self::Count(tx, _) => drop(tx.send(Err(e()))),
        }
    }
}

/// WAL size at which the writer checkpoints once no request is waiting. Small, so that a
/// request arriving during a checkpoint waits little: at 350k readings/s paced, p99 3.9–4.4 ms
/// with 1 MiB against 6.8–10.3 ms with SQLite's own threshold of 4 MiB, same maximum
/// throughput; at 512k readings/s paced, 512 KiB gave a median p99 of 4.1 ms against 4.9 ms
/// with 1 MiB over 8 paired rounds (docs/performance.md, decision D13).
pub(super) const CHECKPOINT_BYTES: i64 = 1 << 19;
/// WAL size at which the writer checkpoints even with requests waiting: the bound on the WAL
/// under continuous writes (plus one transaction).
pub(super) const CHECKPOINT_FORCE_BYTES: i64 = 8 << 20;

thread_local! {
    /// Pages in the WAL after the last commit on this thread (set by [`note_wal_pages`]; the
    /// hook gets no state of its own, and the writer is the only thread committing on its
    /// connection).
    static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
}

/// The commit hook: records the WAL's size; checkpoints are the writer loop's decision.
fn note_wal_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.set(pages);
    Ok(())
}

/// Checkpoints if the WAL is due (see the module documentation); `idle`: no request waits.
fn maybe_checkpoint(conn: &Connection, page_size: i64, idle: bool) {
    let bytes = i64::from(WAL_PAGES.get()) * page_size;
    if bytes < CHECKPOINT_FORCE_BYTES && !(idle && bytes >= CHECKPOINT_BYTES) {
        return;
    }
    WAL_PAGES.set(0);
    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    match r {
        Ok((0, log, done)) => tracing::trace!(log, done, "sqlite: checkpoint"),
        Ok((_, log, done)) => tracing::debug!(log, done, "sqlite: checkpoint was busy"),
        Err(e) => tracing::warn!("sqlite: checkpoint failed: {e}"),
    }
}

/// What the writer keeps in memory between requests.
struct State {
    /// The inbox's id ranges.
    inbox: Inbox,
    /// Device id → key, for the devices seen (keys never change; cleared when a transaction
    /// is rolled back, which may have added the device). At most one entry per registered
    /// device.
    keys: HashMap<Arc<str>, i64>,
    /// Device key → a bound at or above the last message id of the device's chunks in
    /// `reading_chunks`, for the devices seen: a run starting above it overlaps no chunk there
    /// and needs no index probe. Raised by every insert there (also those rolled back later:
    /// too high only costs a probe), dropped for the devices a merge adds chunks to (reloaded
    /// on use), never below the truth.
    chunks_last: HashMap<i64, i64>,
}

impl State {
    fn new(inbox: Inbox) -> Self {
        Self {
            inbox,
            keys: HashMap::new(),
            chunks_last: HashMap::new(),
        }
    }

    /// The device's key, or None if it is not registered.
    fn key(&mut self, conn: &Connection, id: &Arc<str>) -> Result<Option<i64>, StorageError> {
        if let Some(&key) = self.keys.get(id) {
            return Ok(Some(key));
        }
        let key: Option<i64> = conn
            .prepare_cached("SELECT key FROM devices WHERE id = ?1")
            .and_then(|mut s| s.query_row([&**id], |row| row.get(0)).optional())
            .map_err(db)?;
        if let Some(key) = key {
            self.keys.insert(Arc::clone(id), key);
        }
        Ok(key)
    }

    /// The bound of [`State::chunks_last`] for `device` (loaded on first use; -1: no chunk).
    fn chunks_last(&mut self, conn: &Connection, device: i64) -> Result<i64, StorageError> {
        if let Some(&last) = self.chunks_last.get(&device) {
            return Ok(last);
        }
        // Chunks of a device are disjoint: the one with the largest first id ends last.
        let last: i64 = conn
            .prepare_cached(
                "SELECT last_msg FROM reading_chunks WHERE device = ?1 \
                 ORDER BY first_msg DESC LIMIT 1",
            )
            .and_then(|mut s| s.query_row([device], |row| row.get(0)).optional())
            .map_err(db)?
            .unwrap_or(-1);
        self.chunks_last.insert(device, last);
        Ok(last)
    }

    /// A chunk up to `last` was inserted into `reading_chunks` for `device`.
    fn chunk_inserted(&mut self, device: i64, last: i64) {
        if let Some(bound) = self.chunks_last.get_mut(&device) {
            *bound = (*bound).max(last);
        }
    }

    /// [`Inbox::move_oldest`], forgetting the chunk bounds of the devices it moved rows of.
    fn move_oldest(&mut self, conn: &Connection, max_rows: usize) -> Result<usize, StorageError> {
        self.inbox.move_oldest(conn, max_rows, |device| {
            self.chunks_last.remove(&device);
        })
    }

    /// The open transaction was rolled back.
    fn rolled_back(&mut self) {
        self.inbox.roll_back_to(0);
        self.keys.clear();
    }
}

/// Moves inbox rows into `reading_chunks` (one transaction of at most [`MERGE_STEP`] rows)
/// when due: at [`MERGE_ROWS`] rows when no request waits, [`MERGE_FORCE_ROWS`] regardless.
fn maybe_merge(conn: &Connection, st: &mut State, idle: bool) {
    if !merge_due(st.inbox.rows(), idle) {
        return;
    }
    let r = exec(conn, "BEGIN IMMEDIATE")
        .and_then(|()| st.move_oldest(conn, MERGE_STEP))
        .and_then(|moved| exec(conn, "COMMIT").map(|()| moved));
    match r {
        Ok(moved) => {
            st.inbox.committed();
            tracing::trace!(moved, left = st.inbox.rows(), "sqlite: inbox merged");
        }
        // The rows stay in the inbox (still read and deduplicated there); the next merge
        // tries again.
        Err(e) => {
            if !conn.is_autocommit()
                && let Err(e) = exec(conn, "ROLLBACK")
            {
                tracing::error!("sqlite: rollback of an inbox merge failed: {e}");
            }
            st.rolled_back();
            tracing::warn!("sqlite: inbox merge failed: {e}");
        }
    }
}

/// Whether a merge is due with `rows` in the inbox; `idle`: no request waits.
fn merge_due(rows: usize, idle: bool) -> bool {
    rows >= MERGE_FORCE_ROWS || (idle && rows >= MERGE_ROWS)
}

/// Moves every inbox row into `reading_chunks`, inside the open transaction.
fn merge_all(conn: &Connection, st: &mut State) -> Result<usize, StorageError> {
    let mut total = 0;
    loop {
        match st.move_oldest(conn, MERGE_STEP)? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// The writer thread's body: runs until every sender is gone and the queue is drained.
pub(super) fn run(conn: Connection, inbox: Inbox, mut rx: mpsc::Receiver<Op>, max_batch: usize) {
    let max_batch = max_batch.max(1);
    let mut st = State::new(inbox);
    WAL_PAGES.set(0);
    conn.wal_hook(Some(note_wal_pages));
    let page_size = conn
        .pragma_query_value(None, "page_size", |r| r.get::<_, i64>(0))
        .unwrap_or(4096);
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
        run_batch(&conn, &mut st, batch.drain(..));
        maybe_merge(&conn, &mut st, carry.is_none() && rx.is_empty());
        maybe_checkpoint(&conn, page_size, carry.is_none() && rx.is_empty());
    }
    // Queue drained and closed: empty the inbox, let SQLite refresh its statistics, then close
    // (the last connection to close checkpoints the WAL).
    let (reply, _) = oneshot::channel();
    run_batch(&conn, &mut st, std::iter::once(Op::MergeInbox { reply }));
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
fn run_batch(conn: &Connection, st: &mut State, ops: impl ExactSizeIterator<Item = Op>) {
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
        let mark = st.inbox.mark();
        let d = op.execute(conn, st);
        if d.is_ok() {
            if let Err(e) = exec(conn, "RELEASE op") {
                fatal = Some(e);
            }
        } else {
            st.inbox.roll_back_to(mark);
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back (I/O error, disk full,
                // RAISE(ROLLBACK) ...): the requests before this one are lost too.
                fatal = d.error();
            } else if let Err(e) =
                exec(conn, "ROLLBACK TO op").and_then(|()| exec(conn, "RELEASE op"))
            {
                fatal = Some(e);
            }
        }
        done.push(d);
    }
    if fatal.is_none()
        && let Err(e) = exec(conn, "COMMIT")
    {
        fatal = Some(e);
    }
    match fatal {
        None => {
            st.inbox.committed();
            done.into_iter().for_each(Done::send);
        }
        Some(err) => {
            st.rolled_back();
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

fn store(
    conn: &Connection,
    st: &mut State,
    devices: &[DeviceReadings],
) -> Result<StoreOutcome, StorageError> {
    let mut update = conn
        .prepare_cached(
            "UPDATE devices SET readings = readings + ?1, \
             last_seen_ms = max(coalesce(last_seen_ms, ?2), ?2) WHERE key = ?3",
        )
        .map_err(db)?;
    let mut outcome = StoreOutcome::default();
    for d in devices {
        let Some(key) = st.key(conn, &d.device_id)? else {
            return Err(StorageError(format!("unknown device {:?}", d.device_id)));
        };
        let mut dups = d.repeats;
        let mut inserted = 0;
        let mut run_start = 0;
        for run in d
            .rows
            .chunk_by(|a, b| a.msg_id.checked_add(1) == Some(b.msg_id))
        {
            let stored = stored_ranges(conn, st, key, run[0].msg_id, run[run.len() - 1].msg_id)?;
            // Split the run around the ids already stored; insert the rest.
            let mut ranges = stored.iter().peekable();
            let mut start = run_start;
            for (i, r) in (run_start..).zip(run) {
                while ranges.next_if(|&&(_, last)| last < r.msg_id).is_some() {}
                if ranges.peek().is_some_and(|&&(first, _)| first <= r.msg_id) {
                    inserted += insert_chunks(conn, st, key, d, start..i)?;
                    start = i + 1;
                    dups += 1;
                }
            }
            run_start += run.len();
            inserted += insert_chunks(conn, st, key, d, start..run_start)?;
        }
        outcome.inserted += inserted;
        outcome.duplicates += dups;
        outcome
            .per_device
            .push((Arc::clone(&d.device_id), inserted));
        update
            .execute(params![inserted as i64, d.last_received, key])
            .map_err(db)?;
    }
    Ok(outcome)
}

/// The (first, last) message ids of the device's chunks, in `reading_chunks` and in the inbox,
/// that overlap `first..=last`, in order. Chunks of a device are disjoint, so the common case
/// (no overlap) costs at most one index probe, none when the run starts above the device's
/// chunks.
fn stored_ranges(
    conn: &Connection,
    st: &mut State,
    device: i64,
    first: i64,
    last: i64,
) -> Result<Vec<(i64, i64)>, StorageError> {
    let mut ranges = Vec::new();
    st.inbox.overlapping(device, first, last, &mut ranges);
    let in_inbox = ranges.len();
    if first > st.chunks_last(conn, device)? {
        return Ok(ranges);
    }
    stored_chunk_ranges(conn, device, first, last, &mut ranges)?;
    if in_inbox > 0 && ranges.len() > in_inbox {
        ranges.sort_unstable();
    }
    Ok(ranges)
}

/// Appends the ranges of `reading_chunks` of [`stored_ranges`] to `out`, in order.
fn stored_chunk_ranges(
    conn: &Connection,
    device: i64,
    first: i64,
    last: i64,
    out: &mut Vec<(i64, i64)>,
) -> Result<(), StorageError> {
    let mut at_or_below = conn
        .prepare_cached(
            "SELECT first_msg, last_msg FROM reading_chunks WHERE device = ?1 AND first_msg <= ?2 \
             ORDER BY first_msg DESC LIMIT 1",
        )
        .map_err(db)?;
    let mut probe = |m: i64| -> Result<Option<(i64, i64)>, StorageError> {
        at_or_below
            .query_row(params![device, m], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db)
    };
    match probe(last)? {
        None => return Ok(()),
        Some((_, l)) if l < first => return Ok(()),
        Some(_) => {}
    }
    let from = match probe(first)? {
        Some((f, l)) if l >= first => f,
        _ => first,
    };
    let mut within = conn
        .prepare_cached(
            "SELECT first_msg, last_msg FROM reading_chunks \
             WHERE device = ?1 AND first_msg BETWEEN ?2 AND ?3 ORDER BY first_msg",
        )
        .map_err(db)?;
    for r in within
        .query_map(params![device, from, last], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(db)?
    {
        out.push(r.map_err(db)?);
    }
    Ok(())
}

/// Inserts `d.rows[range]` (consecutive message ids, none stored yet) as chunks of at most
/// [`CHUNK_MAX_READINGS`] readings spanning at most [`CHUNK_SPAN_MS`]; returns how many.
/// Chunks of fewer than [`INBOX_BELOW`] readings go to the inbox.
fn insert_chunks(
    conn: &Connection,
    st: &mut State,
    device: i64,
    d: &DeviceReadings,
    range: std::ops::Range<usize>,
) -> Result<usize, StorageError> {
    let mut at = range.start;
    while at < range.end {
        let first = d.rows[at];
        let (mut t_min, mut t_max) = (first.device_time_ms, first.device_time_ms);
        let mut end = at + 1;
        for r in &d.rows[end..range.end] {
            let (lo, hi) = (t_min.min(r.device_time_ms), t_max.max(r.device_time_ms));
            if end - at == CHUNK_MAX_READINGS || hi.saturating_sub(lo) > CHUNK_SPAN_MS {
                break;
            }
            (t_min, t_max) = (lo, hi);
            end += 1;
        }
        let body = d.chunk_body(at..end);
        let last = d.rows[end - 1].msg_id;
        let to_inbox = end - at < INBOX_BELOW;
        conn.prepare_cached(if to_inbox { INSERT_INBOX } else { INSERT_CHUNK })
            .and_then(|mut s| s.execute(params![device, first.msg_id, last, t_min, t_max, body]))
            .map_err(db)?;
        if to_inbox {
            st.inbox.added(device, first.msg_id, last);
        } else {
            st.chunk_inserted(device, last);
        }
        at = end;
    }
    Ok(range.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_are_due_at_their_thresholds() {
        assert!(!merge_due(MERGE_ROWS - 1, true));
        assert!(merge_due(MERGE_ROWS, true));
        assert!(!merge_due(MERGE_FORCE_ROWS - 1, false));
        assert!(merge_due(MERGE_FORCE_ROWS, false));
        assert!(!merge_due(0, true));
    }
}
