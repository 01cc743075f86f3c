//! The inbox of schema version 4 (docs/decisions.md D14), on the writer thread.
//!
//! Small runs of readings are appended to `reading_inbox` in arrival order; the table has no
//! secondary index, so a commit of one-reading records from many devices dirties a few pages at
//! the end of one B-tree. [`Inbox`] keeps the id ranges of the inbox's rows in memory (the
//! deduplication that the index of `reading_chunks` does for that table), including the rows
//! of the open transaction, with an undo log for savepoint and transaction rollbacks.
//! [`Inbox::move_oldest`] moves the oldest rows into `reading_chunks`, joining each device's
//! consecutive runs into one chunk.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::db;
use super::schema::{CHUNK_MAX_READINGS, CHUNK_SPAN_MS, INSERT_CHUNK};
use crate::StorageError;

/// Inbox rows at which the writer merges once no request is waiting.
pub(super) const MERGE_ROWS: usize = 2048;
/// Inbox rows at which the writer merges even with requests waiting: the bound on the rows a
/// query scans and on the memory of [`Inbox`] (plus one batch).
pub(super) const MERGE_FORCE_ROWS: usize = 16_384;
/// Most rows moved by one merge (one transaction), so that a request arriving during a merge
/// waits a bounded time.
pub(super) const MERGE_STEP: usize = 4096;

/// The id ranges of the inbox's rows (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct Inbox {
    /// (device, first_msg) → last_msg, committed rows and those of the open transaction.
    ranges: BTreeMap<(i64, i64), i64>,
    /// The changes of the open transaction, in order: reverted on rollback.
    undo: Vec<Change>,
}

/// A change to [`Inbox::ranges`] in the open transaction.
#[derive(Debug)]
enum Change {
    Added((i64, i64)),
    Removed((i64, i64), i64),
}

impl Inbox {
    /// Reads the ranges of the rows in the file's inbox.
    pub(super) fn load(conn: &Connection) -> Result<Self, StorageError> {
        let mut stmt = conn
            .prepare("SELECT device, first_msg, last_msg FROM reading_inbox")
            .map_err(db)?;
        let ranges = stmt
            .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        Ok(Self {
            ranges,
            undo: Vec::new(),
        })
    }

    /// Rows in the inbox (with the open transaction's).
    pub(super) fn rows(&self) -> usize {
        self.ranges.len()
    }

    /// Appends the inbox's (first, last) ranges of `device` that overlap `first..=last` to
    /// `out`, in order. Ranges of a device are disjoint, so only the one starting at or below
    /// `first` can reach into the interval from the left.
    pub(super) fn overlapping(
        &self,
        device: i64,
        first: i64,
        last: i64,
        out: &mut Vec<(i64, i64)>,
    ) {
        if let Some((&(_, f), &l)) = self
            .ranges
            .range((device, i64::MIN)..=(device, first))
            .next_back()
            && l >= first
            && f < first
        {
            out.push((f, l));
        }
        out.extend(
            self.ranges
                .range((device, first)..=(device, last))
                .map(|(&(_, f), &l)| (f, l)),
        );
    }

    /// Records a row inserted in the open transaction.
    pub(super) fn added(&mut self, device: i64, first: i64, last: i64) {
        self.ranges.insert((device, first), last);
        self.undo.push(Change::Added((device, first)));
    }

    /// A mark for [`Inbox::roll_back_to`]: the rows added so far in the open transaction.
    pub(super) fn mark(&self) -> usize {
        self.undo.len()
    }

    /// Reverts the changes made after `mark` (their savepoint or transaction was rolled back).
    pub(super) fn roll_back_to(&mut self, mark: usize) {
        while self.undo.len() > mark {
            match self.undo.pop() {
                Some(Change::Added(key)) => drop(self.ranges.remove(&key)),
                Some(Change::Removed(key, last)) => drop(self.ranges.insert(key, last)),
                None => break,
            }
        }
    }

    /// The open transaction committed: its rows stay.
    pub(super) fn committed(&mut self) {
        self.undo.clear();
    }

    /// Moves the oldest `max_rows` rows into `reading_chunks`, inside the open transaction;
    /// returns how many rows were moved. `chunks_added` is called with the device key of each
    /// row moved.
    pub(super) fn move_oldest(
        &mut self,
        conn: &Connection,
        max_rows: usize,
        mut chunks_added: impl FnMut(i64),
    ) -> Result<usize, StorageError> {
        let moved = move_rows(conn, max_rows)?;
        for key in &moved {
            chunks_added(key.0);
            if let Some(last) = self.ranges.remove(key) {
                self.undo.push(Change::Removed(*key, last));
            }
        }
        Ok(moved.len())
    }
}

/// One inbox row.
struct Row {
    device: i64,
    first: i64,
    last: i64,
    t_min: i64,
    t_max: i64,
    body: Vec<u8>,
}

/// The work of [`Inbox::move_oldest`]: returns the (device, first_msg) of the rows moved.
fn move_rows(conn: &Connection, max_rows: usize) -> Result<Vec<(i64, i64)>, StorageError> {
    let limit = i64::try_from(max_rows).unwrap_or(i64::MAX);
    let mut select = conn
        .prepare_cached(
            "SELECT id, device, first_msg, last_msg, t_min, t_max, body FROM reading_inbox \
             ORDER BY id LIMIT ?1",
        )
        .map_err(db)?;
    let rows = select
        .query_map([limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                Row {
                    device: r.get(1)?,
                    first: r.get(2)?,
                    last: r.get(3)?,
                    t_min: r.get(4)?,
                    t_max: r.get(5)?,
                    body: r.get(6)?,
                },
            ))
        })
        .map_err(db)?
        .collect::<Result<Vec<(i64, Row)>, _>>()
        .map_err(db)?;
    // In id order: the last row has the largest id.
    let Some(&(max_id, _)) = rows.last() else {
        return Ok(Vec::new());
    };
    let mut rows: Vec<Row> = rows.into_iter().map(|(_, row)| row).collect();
    rows.sort_unstable_by_key(|r| (r.device, r.first));
    let moved = rows.iter().map(|r| (r.device, r.first)).collect();

    let mut insert = conn.prepare_cached(INSERT_CHUNK).map_err(db)?;
    let mut chunk: Option<Row> = None;
    for row in rows {
        match &mut chunk {
            Some(c) if joins(c, &row) => {
                // Bodies are elements back to back (see the `chunk` module): concatenated.
                c.body.extend_from_slice(&row.body);
                c.last = row.last;
                c.t_min = c.t_min.min(row.t_min);
                c.t_max = c.t_max.max(row.t_max);
            }
            _ => {
                if let Some(done) = chunk.replace(row) {
                    insert_chunk(&mut insert, &done)?;
                }
            }
        }
    }
    if let Some(done) = chunk {
        insert_chunk(&mut insert, &done)?;
    }
    conn.prepare_cached("DELETE FROM reading_inbox WHERE id <= ?1")
        .and_then(|mut s| s.execute([max_id]))
        .map_err(db)?;
    Ok(moved)
}

/// Whether `next` continues `chunk` within the chunk bounds of schema version 3.
fn joins(chunk: &Row, next: &Row) -> bool {
    let readings = |r: &Row| r.last - r.first + 1;
    next.device == chunk.device
        && chunk.last.checked_add(1) == Some(next.first)
        && readings(chunk) + readings(next) <= CHUNK_MAX_READINGS as i64
        && chunk
            .t_max
            .max(next.t_max)
            .saturating_sub(chunk.t_min.min(next.t_min))
            <= CHUNK_SPAN_MS
}

fn insert_chunk(insert: &mut rusqlite::CachedStatement<'_>, c: &Row) -> Result<(), StorageError> {
    insert
        .execute(params![c.device, c.first, c.last, c.t_min, c.t_max, c.body])
        .map(drop)
        .map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(ranges: &[(i64, i64, i64)]) -> Inbox {
        let mut i = Inbox::default();
        for &(d, f, l) in ranges {
            i.added(d, f, l);
        }
        i.committed();
        i
    }

    fn overlapping(i: &Inbox, d: i64, f: i64, l: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        i.overlapping(d, f, l, &mut out);
        out
    }

    #[test]
    fn overlapping_finds_exactly_the_ranges_that_meet_the_interval() {
        let i = inbox(&[(1, 10, 19), (1, 25, 25), (1, 30, 40), (2, 0, 100)]);
        assert_eq!(overlapping(&i, 1, 0, 9), vec![]);
        assert_eq!(overlapping(&i, 1, 0, 10), vec![(10, 19)]);
        assert_eq!(overlapping(&i, 1, 15, 15), vec![(10, 19)]);
        assert_eq!(
            overlapping(&i, 1, 19, 30),
            vec![(10, 19), (25, 25), (30, 40)]
        );
        assert_eq!(overlapping(&i, 1, 20, 24), vec![]);
        assert_eq!(overlapping(&i, 1, 41, i64::MAX), vec![]);
        assert_eq!(overlapping(&i, 3, i64::MIN, i64::MAX), vec![]);
        assert_eq!(overlapping(&i, 2, 50, 50), vec![(0, 100)]);
    }

    #[test]
    fn roll_back_forgets_only_what_came_after_the_mark() {
        let mut i = inbox(&[(1, 1, 1)]);
        i.added(1, 2, 2);
        let mark = i.mark();
        i.added(1, 3, 3);
        i.added(2, 3, 3);
        i.roll_back_to(mark);
        assert_eq!(overlapping(&i, 1, 0, 10), vec![(1, 1), (2, 2)]);
        assert_eq!(overlapping(&i, 2, 0, 10), vec![]);
        i.roll_back_to(0);
        assert_eq!(overlapping(&i, 1, 0, 10), vec![(1, 1)]);
        assert_eq!(i.rows(), 1);
    }

    #[test]
    fn runs_join_only_within_the_chunk_bounds() {
        let row = |device, first, last, t: i64| Row {
            device,
            first,
            last,
            t_min: t,
            t_max: t,
            body: Vec::new(),
        };
        assert!(joins(&row(1, 1, 5, 0), &row(1, 6, 6, 10)));
        assert!(!joins(&row(1, 1, 5, 0), &row(1, 7, 7, 10)), "gap");
        assert!(!joins(&row(1, 1, 5, 0), &row(2, 6, 6, 10)), "device");
        assert!(
            !joins(&row(1, 1, 5, 0), &row(1, 6, 6, CHUNK_SPAN_MS + 1)),
            "span"
        );
        let max = CHUNK_MAX_READINGS as i64;
        assert!(joins(&row(1, 1, max - 1, 0), &row(1, max, max, 0)));
        assert!(
            !joins(&row(1, 1, max, 0), &row(1, max + 1, max + 1, 0)),
            "size"
        );
        assert!(
            !joins(&row(1, 1, i64::MAX, 0), &row(1, 1, 1, 0)),
            "overflow"
        );
    }
}
