//! The bounded queue of readings not yet acknowledged, optionally kept in a journal file so
//! that a restart, a kill or (with [`SyncPolicy::Always`]) a power cut loses nothing.
//!
//! # The journal
//! An append-only file: a 16-byte header (`IOTSEALQ`, version 1, zeros), then entries
//! `u32 length (LE) ‖ u32 CRC-32 of the body (LE) ‖ body`, the body's first byte its kind:
//! - `1` push: `msg_id u64 ‖ time_ms u64 ‖ n u8 ‖ n × (sensor code u8 ‖ value f32) ‖ extra_len
//!   u16 ‖ extra` (integers and floats little-endian);
//! - `2` acknowledged: `count u16 ‖ count × msg_id u64`;
//! - `3` base: `next_msg_id u64` (first entry of a compacted file: ids never go back).
//!
//! A push costs one append (and one `fdatasync` with [`SyncPolicy::Always`]); an
//! acknowledgement one append for all the ids it covers: O(1) per reading, never a rewrite of
//! the queue. When the file holds more than [`COMPACT_MIN_BYTES`] and four times the size of
//! its live entries, it is rewritten with the live entries only (temporary file, `fsync`,
//! rename, `fsync` of the directory): amortised O(1).
//!
//! At open, entries are replayed up to the first one that is incomplete or fails its CRC (a
//! write torn by a kill or a power cut; with [`SyncPolicy::Always`] only an entry whose push had
//! not returned yet); the file is cut back there. A failed append is cut back too, so a later
//! entry never follows a torn one. An acknowledgement that could not be written only means the
//! reading is sent again after a restart, which the gateway deduplicates by (device, msg_id).
//!
//! # fsync policy
//! [`SyncPolicy::Always`] (the default): a push returns after the entry is on disk
//! (`fdatasync`), so an accepted reading survives a power cut; acknowledgements are appended
//! without a sync (losing one costs a resend, not a reading). [`SyncPolicy::Never`]: the
//! operating system writes when it likes: a killed process loses nothing (the kernel holds
//! the page), a power cut may lose the last seconds of pushes.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use iotseal_proto::reading::{MAX_EXTRA, MAX_VALUES, Reading, SensorKind};
use serde::{Deserialize, Serialize};

/// A reading waiting for its acknowledgement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingReading {
    /// Message id (unique per device).
    pub msg_id: u64,
    /// Device time, ms since the Unix epoch.
    pub time_ms: u64,
    /// (sensor kind code, value).
    pub values: Vec<(u8, f32)>,
    /// Opaque bytes.
    pub extra: Vec<u8>,
}

impl PendingReading {
    /// The wire reading.
    pub fn to_reading(&self) -> Reading {
        Reading {
            msg_id: self.msg_id,
            time_ms: self.time_ms,
            values: self
                .values
                .iter()
                .map(|&(k, v)| (SensorKind::from_code(k), v))
                .collect(),
            extra: self.extra.clone(),
        }
    }
}

/// The queue is full: deliver (flush) before pushing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("reading queue full")
    }
}

impl std::error::Error for QueueFull {}

/// Why a reading was not queued.
#[derive(Debug)]
pub enum PushError {
    /// The queue holds its capacity: deliver (flush) first.
    Full,
    /// More values or extra bytes than a reading can carry.
    TooLarge,
    /// The journal could not be written: the reading is not queued.
    Io(io::Error),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("reading queue full"),
            Self::TooLarge => write!(
                f,
                "reading too large (at most {MAX_VALUES} values and {MAX_EXTRA} extra bytes)"
            ),
            Self::Io(e) => write!(f, "queue journal: {e}"),
        }
    }
}

impl std::error::Error for PushError {}

impl From<QueueFull> for PushError {
    fn from(_: QueueFull) -> Self {
        Self::Full
    }
}

/// An acknowledgement was applied in memory but could not be journaled.
#[derive(Debug)]
pub struct AckWriteError {
    /// Readings forgotten in memory all the same.
    pub removed: usize,
    /// The write's error.
    pub error: io::Error,
}

impl fmt::Display for AckWriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledgement of {} readings not journaled: {}",
            self.removed, self.error
        )
    }
}

impl std::error::Error for AckWriteError {}

/// When the journal is forced to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` after every push: an accepted reading survives a power cut.
    #[default]
    Always,
    /// Never forced: survives a killed process, not necessarily a power cut.
    Never,
}

/// Journal files are compacted only above this size.
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
const MAGIC: &[u8; 8] = b"IOTSEALQ";
const VERSION: u8 = 1;
const HEADER_LEN: u64 = 16;
/// The largest body: a push with every value and all extra bytes.
const MAX_BODY: usize = 1 + 8 + 8 + 1 + MAX_VALUES * 5 + 2 + MAX_EXTRA;
const KIND_PUSH: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_BASE: u8 = 3;

/// What opening a journal found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Entries replayed.
    pub entries: u64,
    /// Bytes cut from the end (a torn or corrupt tail).
    pub truncated_bytes: u64,
}

struct Journal {
    file: File,
    path: PathBuf,
    len: u64,
    /// Bytes of the live push entries (what a compaction would keep).
    live_bytes: u64,
    sync: SyncPolicy,
    /// A failed write could not be cut back: no more appends until reopened.
    broken: bool,
}

/// Pending readings in message-id order, bounded, optionally journaled.
pub struct DurableQueue {
    items: BTreeMap<u64, PendingReading>,
    capacity: usize,
    next_msg_id: u64,
    journal: Option<Journal>,
    recovery: Recovery,
}

impl fmt::Debug for DurableQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableQueue")
            .field("pending", &self.items.len())
            .field("capacity", &self.capacity)
            .field("next_msg_id", &self.next_msg_id)
            .field("journal", &self.journal.as_ref().map(|j| &j.path))
            .finish()
    }
}

/// The journal bytes of a reading's push entry (frame included).
fn entry_len(r: &PendingReading) -> u64 {
    (8 + 1 + 8 + 8 + 1 + 5 * r.values.len() + 2 + r.extra.len()) as u64
}

fn encode_push(r: &PendingReading, out: &mut Vec<u8>) {
    out.push(KIND_PUSH);
    out.extend_from_slice(&r.msg_id.to_le_bytes());
    out.extend_from_slice(&r.time_ms.to_le_bytes());
    out.push(r.values.len() as u8);
    for &(k, v) in &r.values {
        out.push(k);
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(r.extra.len() as u16).to_le_bytes());
    out.extend_from_slice(&r.extra);
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

enum Entry {
    Push(PendingReading),
    Ack(Vec<u64>),
    Base(u64),
}

fn decode(body: &[u8]) -> Option<Entry> {
    let mut c = Cursor(body);
    let e = match c.u8()? {
        KIND_PUSH => {
            let msg_id = c.u64()?;
            let time_ms = c.u64()?;
            let n = c.u8()? as usize;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                let k = c.u8()?;
                let v = f32::from_le_bytes(c.take(4)?.try_into().expect("4 bytes"));
                values.push((k, v));
            }
            let extra_len = c.u16()? as usize;
            let extra = c.take(extra_len)?.to_vec();
            Entry::Push(PendingReading {
                msg_id,
                time_ms,
                values,
                extra,
            })
        }
        KIND_ACK => {
            let n = c.u16()? as usize;
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(c.u64()?);
            }
            Entry::Ack(ids)
        }
        KIND_BASE => Entry::Base(c.u64()?),
        _ => return None,
    };
    // Trailing bytes: not an entry this version wrote.
    c.0.is_empty().then_some(e)
}

fn frame(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8] = VERSION;
    h
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl DurableQueue {
    /// A queue in memory only.
    pub fn in_memory(capacity: usize) -> Self {
        Self {
            items: BTreeMap::new(),
            capacity,
            next_msg_id: 1,
            journal: None,
            recovery: Recovery::default(),
        }
    }

    /// A queue journaled in `path`: replays it if it exists (cutting a torn tail), creates it
    /// otherwise.
    ///
    /// # Errors
    /// The file cannot be read or written, or is not a queue journal. Readings beyond
    /// `capacity` found in the file are kept (nothing found is dropped).
    pub fn open(path: &Path, capacity: usize, sync: SyncPolicy) -> io::Result<Self> {
        let mut q = Self::in_memory(capacity);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        let mut start = [0u8; HEADER_LEN as usize];
        let got = file.read(&mut start)?;
        if got > 0 && start[0] == b'{' {
            drop(file);
            return Self::migrate_json(path, capacity, sync);
        }
        if size < HEADER_LEN && start[..got] != header()[..got] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not an iotseal queue journal", path.display()),
            ));
        }
        if size < HEADER_LEN {
            // New (or cut inside its header before any entry could follow): start over.
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header())?;
            file.sync_all()?;
            sync_dir(path)?;
            q.recovery.truncated_bytes = size;
            q.journal = Some(Journal {
                file,
                path: path.to_path_buf(),
                len: HEADER_LEN,
                live_bytes: 0,
                sync,
                broken: false,
            });
            return Ok(q);
        }
        let mut h = [0u8; HEADER_LEN as usize];
        file.seek(SeekFrom::Start(0))?;
        file.read_exact(&mut h)?;
        if &h[..8] != MAGIC || h[8] != VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: not an iotseal queue journal (version 1)",
                    path.display()
                ),
            ));
        }
        let mut reader = io::BufReader::new(&mut file);
        let mut pos = HEADER_LEN;
        let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
        let mut body = Vec::new();
        loop {
            let mut head = [0u8; 8];
            if reader.read_exact(&mut head).is_err() {
                break;
            }
            let len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
            let crc = u32::from_le_bytes(head[4..].try_into().expect("4"));
            if len == 0 || len > MAX_BODY {
                break;
            }
            body.resize(len, 0);
            if reader.read_exact(&mut body).is_err() || crc32fast::hash(&body) != crc {
                break;
            }
            let Some(entry) = decode(&body) else { break };
            let entry_len = 8 + len as u64;
            match entry {
                Entry::Push(r) => {
                    q.next_msg_id = q.next_msg_id.max(r.msg_id.saturating_add(1));
                    sizes.insert(r.msg_id, entry_len);
                    q.items.entry(r.msg_id).or_insert(r);
                }
                Entry::Ack(ids) => {
                    for id in ids {
                        q.items.remove(&id);
                        sizes.remove(&id);
                    }
                }
                Entry::Base(next) => q.next_msg_id = q.next_msg_id.max(next),
            }
            q.recovery.entries += 1;
            pos += entry_len;
        }
        drop(reader);
        if pos < size {
            // A torn or corrupt tail: cut it, so that new entries follow a valid one.
            file.set_len(pos)?;
            file.sync_all()?;
            q.recovery.truncated_bytes = size - pos;
        }
        file.seek(SeekFrom::Start(pos))?;
        q.journal = Some(Journal {
            file,
            path: path.to_path_buf(),
            len: pos,
            live_bytes: sizes.values().sum(),
            sync,
            broken: false,
        });
        Ok(q)
    }

    /// Converts the JSON queue file of earlier versions (`{next_msg_id, pending}`, rewritten
    /// whole on every change) into a journal in place (written beside it, then renamed).
    fn migrate_json(path: &Path, capacity: usize, sync: SyncPolicy) -> io::Result<Self> {
        #[derive(Deserialize)]
        struct Old {
            next_msg_id: u64,
            pending: Vec<PendingReading>,
        }
        let text = std::fs::read_to_string(path)?;
        let old: Old = serde_json::from_str(&text)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut q = Self::in_memory(capacity);
        q.next_msg_id = old.next_msg_id;
        for r in old.pending {
            q.next_msg_id = q.next_msg_id.max(r.msg_id.saturating_add(1));
            q.items.insert(r.msg_id, r);
        }
        let tmp = tmp_path(path);
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        q.journal = Some(Journal {
            file,
            path: path.to_path_buf(),
            len: 0,
            live_bytes: 0,
            sync,
            broken: false,
        });
        // compact() writes header, base and live entries to `path.tmp`, then renames it.
        q.compact()?;
        Ok(q)
    }

    /// What opening the journal found.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// Readings queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The id the next push gets.
    pub fn next_msg_id(&self) -> u64 {
        self.next_msg_id
    }

    /// The oldest `n` readings.
    pub fn front(&self, n: usize) -> impl Iterator<Item = &PendingReading> {
        self.items.values().take(n)
    }

    /// Queues a reading; returns its message id once it is journaled (and, with
    /// [`SyncPolicy::Always`], on disk).
    ///
    /// # Errors
    /// [`PushError::Full`] at capacity (no id is taken), [`PushError::TooLarge`],
    /// [`PushError::Io`] when the journal could not be written (the reading is not queued).
    pub fn push(
        &mut self,
        time_ms: u64,
        values: Vec<(u8, f32)>,
        extra: Vec<u8>,
    ) -> Result<u64, PushError> {
        if self.items.len() >= self.capacity {
            return Err(PushError::Full);
        }
        if values.len() > MAX_VALUES || extra.len() > MAX_EXTRA {
            return Err(PushError::TooLarge);
        }
        let r = PendingReading {
            msg_id: self.next_msg_id,
            time_ms,
            values,
            extra,
        };
        if let Some(j) = &mut self.journal {
            let mut body = Vec::with_capacity(32 + r.values.len() * 5 + r.extra.len());
            encode_push(&r, &mut body);
            let mut buf = Vec::with_capacity(body.len() + 8);
            frame(&body, &mut buf);
            debug_assert_eq!(buf.len() as u64, entry_len(&r));
            j.append(&buf, j.sync == SyncPolicy::Always)
                .map_err(PushError::Io)?;
            j.live_bytes += buf.len() as u64;
        }
        let id = r.msg_id;
        self.next_msg_id += 1;
        self.items.insert(id, r);
        Ok(id)
    }

    /// Forgets acknowledged readings; returns how many were queued. The journal gets one
    /// entry for them (compacted when it has grown well beyond its live entries).
    ///
    /// # Errors
    /// The acknowledgement could not be journaled: the readings are forgotten in memory
    /// anyway (the error says how many); after a restart they are sent again, and the gateway
    /// deduplicates them.
    pub fn remove(&mut self, ids: &HashSet<u64>) -> Result<usize, AckWriteError> {
        let mut removed = Vec::new();
        let mut freed = 0u64;
        for id in ids {
            if let Some(r) = self.items.remove(id) {
                removed.push(*id);
                freed += entry_len(&r);
            }
        }
        let n = removed.len();
        if let Some(j) = &mut self.journal {
            j.live_bytes = j.live_bytes.saturating_sub(freed);
        }
        self.journal_acks(removed)
            .map(|()| n)
            .map_err(|error| AckWriteError { removed: n, error })
    }

    fn journal_acks(&mut self, mut removed: Vec<u64>) -> io::Result<()> {
        let Some(j) = &mut self.journal else {
            return Ok(());
        };
        if removed.is_empty() {
            return Ok(());
        }
        removed.sort_unstable();
        let mut buf = Vec::new();
        for chunk in removed.chunks(u16::MAX as usize) {
            let mut body = Vec::with_capacity(3 + chunk.len() * 8);
            body.push(KIND_ACK);
            body.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            for id in chunk {
                body.extend_from_slice(&id.to_le_bytes());
            }
            frame(&body, &mut buf);
        }
        j.append(&buf, false)?;
        if j.len > COMPACT_MIN_BYTES && j.len > 4 * j.live_bytes.max(1) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal with the live readings only.
    ///
    /// # Errors
    /// The new file could not be written; the old one stays in use.
    pub fn compact(&mut self) -> io::Result<()> {
        let Some(j) = &mut self.journal else {
            return Ok(());
        };
        let tmp = tmp_path(&j.path);
        let mut out = Vec::with_capacity(HEADER_LEN as usize + 32 * self.items.len());
        out.extend_from_slice(&header());
        let mut body = Vec::new();
        body.push(KIND_BASE);
        body.extend_from_slice(&self.next_msg_id.to_le_bytes());
        frame(&body, &mut out);
        let mut live = 0u64;
        for r in self.items.values() {
            body.clear();
            encode_push(r, &mut body);
            let before = out.len();
            frame(&body, &mut out);
            live += (out.len() - before) as u64;
        }
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &j.path)?;
        sync_dir(&j.path)?;
        let mut file = OpenOptions::new().read(true).write(true).open(&j.path)?;
        file.seek(SeekFrom::End(0))?;
        j.file = file;
        j.len = out.len() as u64;
        j.live_bytes = live;
        j.broken = false;
        Ok(())
    }

    /// The journal's size in bytes (0 without one).
    pub fn journal_len(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.len)
    }
}

impl Journal {
    fn append(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other(
                "an earlier write could not be undone; reopen the queue",
            ));
        }
        let r = self
            .file
            .write_all(buf)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match r {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut back what may have been written, so no entry ever follows a torn one.
                let undo = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
                if undo.is_err() {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "iotseal-queue-{}-{name}.journal",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn ids(q: &DurableQueue) -> Vec<u64> {
        q.front(usize::MAX).map(|r| r.msg_id).collect()
    }

    /// Capacity at its edge: the push after it fails with `Full` and takes no message id; an
    /// acknowledgement makes room again; the journal keeps every pending reading and the next
    /// id across a restart.
    #[test]
    fn queue_is_bounded_and_survives_a_restart() {
        let file = tmp("restart");
        let mut q = DurableQueue::open(&file, 3, SyncPolicy::Always).unwrap();
        for i in 0..3u64 {
            assert_eq!(q.push(i, vec![(1, 20.5)], vec![]).unwrap(), i + 1);
        }
        assert!(matches!(q.push(9, vec![], vec![]), Err(PushError::Full)));
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_msg_id(), 4, "a refused push takes no id");
        assert_eq!(q.remove(&[2u64].into_iter().collect()).unwrap(), 1);
        assert_eq!(q.push(10, vec![], vec![7]).unwrap(), 4);
        assert!(matches!(q.push(11, vec![], vec![]), Err(PushError::Full)));
        drop(q);

        let q2 = DurableQueue::open(&file, 3, SyncPolicy::Always).unwrap();
        assert_eq!(ids(&q2), [1, 3, 4]);
        assert_eq!(q2.next_msg_id(), 5);
        assert_eq!(q2.front(10).last().unwrap().extra, [7]);
        assert_eq!(q2.front(1).next().unwrap().values, [(1, 20.5)]);
        assert_eq!(q2.recovery().truncated_bytes, 0);
        let _ = std::fs::remove_file(&file);
    }

    /// The journal cut at every byte of its last entry (a write torn by a kill): the open
    /// replays everything before it, cuts the tail, and appends after it correctly.
    #[test]
    fn a_torn_tail_is_cut_at_every_byte() {
        let file = tmp("torn");
        let mut q = DurableQueue::open(&file, 100, SyncPolicy::Never).unwrap();
        q.push(1, vec![(1, 1.0)], vec![]).unwrap();
        q.push(2, vec![(2, 2.0)], vec![1, 2, 3]).unwrap();
        q.remove(&[1u64].into_iter().collect()).unwrap();
        let before_last = q.journal_len();
        q.push(3, vec![(3, 3.0), (4, 4.0)], vec![9; 10]).unwrap();
        let full = q.journal_len();
        drop(q);
        let bytes = std::fs::read(&file).unwrap();
        for cut in before_last..full {
            std::fs::write(&file, &bytes[..cut as usize]).unwrap();
            let mut q = DurableQueue::open(&file, 100, SyncPolicy::Never).unwrap();
            assert_eq!(ids(&q), [2], "cut at {cut}");
            assert_eq!(q.recovery().truncated_bytes, cut - before_last);
            assert_eq!(q.next_msg_id(), 3, "cut at {cut}");
            // The next append lands after the last valid entry.
            assert_eq!(q.push(4, vec![], vec![]).unwrap(), 3);
            drop(q);
            let q = DurableQueue::open(&file, 100, SyncPolicy::Never).unwrap();
            assert_eq!(ids(&q), [2, 3], "cut at {cut}");
        }
        // A flipped bit in the last entry: its CRC fails, it is cut like a torn one.
        let mut bad = bytes;
        bad[full as usize - 1] ^= 0x40;
        std::fs::write(&file, &bad).unwrap();
        let q = DurableQueue::open(&file, 100, SyncPolicy::Never).unwrap();
        assert_eq!(ids(&q), [2]);
        assert_eq!(q.recovery().truncated_bytes, full - before_last);
        let _ = std::fs::remove_file(&file);
    }

    /// Compaction keeps exactly the live readings and the next id, and bounds the file.
    #[test]
    fn compaction_keeps_the_live_readings_and_bounds_the_file() {
        let file = tmp("compact");
        let mut q = DurableQueue::open(&file, 1_000_000, SyncPolicy::Never).unwrap();
        let mut live = Vec::new();
        for round in 0..400u64 {
            let mut acked = HashSet::new();
            for i in 0..100u64 {
                let id = q
                    .push(round * 100 + i, vec![(1, i as f32)], vec![0; 16])
                    .unwrap();
                // Keep one in a hundred unacknowledged.
                if i == 7 {
                    live.push(id);
                } else {
                    acked.insert(id);
                }
            }
            q.remove(&acked).unwrap();
        }
        assert_eq!(ids(&q), live);
        // 40,000 pushes of ~50 bytes: ~2.4 MB without compaction.
        assert!(
            q.journal_len() < 2 * COMPACT_MIN_BYTES,
            "{}",
            q.journal_len()
        );
        let next = q.next_msg_id();
        drop(q);
        let q = DurableQueue::open(&file, 1_000_000, SyncPolicy::Never).unwrap();
        assert_eq!(ids(&q), live);
        assert_eq!(q.next_msg_id(), next);
        // Everything acknowledged, compacted: ids still never go back.
        let mut q = q;
        q.remove(&live.iter().copied().collect()).unwrap();
        q.compact().unwrap();
        drop(q);
        let mut q = DurableQueue::open(&file, 10, SyncPolicy::Never).unwrap();
        assert!(q.is_empty());
        assert_eq!(q.push(0, vec![], vec![]).unwrap(), next);
        let _ = std::fs::remove_file(&file);
    }

    /// The JSON queue file of earlier versions becomes a journal with the same readings and
    /// next id.
    #[test]
    fn an_old_json_queue_file_is_migrated() {
        let file = tmp("json");
        std::fs::write(
            &file,
            r#"{"next_msg_id":9,"pending":[{"msg_id":5,"time_ms":1,"values":[[1,2.5]],"extra":[3]}]}"#,
        )
        .unwrap();
        let mut q = DurableQueue::open(&file, 10, SyncPolicy::Always).unwrap();
        assert_eq!(ids(&q), [5]);
        assert_eq!(q.push(2, vec![], vec![]).unwrap(), 9);
        drop(q);
        let q = DurableQueue::open(&file, 10, SyncPolicy::Always).unwrap();
        assert_eq!(ids(&q), [5, 9]);
        assert_eq!(q.front(1).next().unwrap().values, [(1, 2.5)]);
        let _ = std::fs::remove_file(&file);
    }

    /// Not a journal: refused with InvalidData, the file untouched.
    #[test]
    fn a_foreign_file_is_refused() {
        let file = tmp("foreign");
        for text in [&b"[1, 2, 3]"[..], b"IOTSEALQ\x02\0\0\0\0\0\0\0", b"xy"] {
            std::fs::write(&file, text).unwrap();
            let e = DurableQueue::open(&file, 10, SyncPolicy::Never).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert_eq!(std::fs::read(&file).unwrap(), text);
        }
        let _ = std::fs::remove_file(&file);
    }
}
