//! The bounded queue of readings not yet acknowledged, optionally persisted to a file so a
//! restart loses nothing.

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use iotseal_proto::reading::{Reading, SensorKind};
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

#[derive(Serialize, Deserialize, Default)]
struct Persisted {
    next_msg_id: u64,
    pending: Vec<PendingReading>,
}

/// Pending readings in message-id order.
#[derive(Debug)]
pub(crate) struct Queue {
    items: VecDeque<PendingReading>,
    capacity: usize,
    pub(crate) next_msg_id: u64,
    file: Option<PathBuf>,
}

impl Queue {
    pub(crate) fn new(capacity: usize, file: Option<PathBuf>) -> std::io::Result<Self> {
        let mut q = Self {
            items: VecDeque::new(),
            capacity,
            next_msg_id: 1,
            file,
        };
        if let Some(path) = &q.file
            && path.exists()
        {
            let text = std::fs::read_to_string(path)?;
            let p: Persisted = serde_json::from_str(&text)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            q.next_msg_id = p.next_msg_id;
            q.items = p.pending.into();
        }
        Ok(q)
    }

    pub(crate) fn push(
        &mut self,
        time_ms: u64,
        values: Vec<(u8, f32)>,
        extra: Vec<u8>,
    ) -> Result<u64, QueueFull> {
        if self.items.len() >= self.capacity {
            return Err(QueueFull);
        }
        let msg_id = self.next_msg_id;
        self.next_msg_id += 1;
        self.items.push_back(PendingReading {
            msg_id,
            time_ms,
            values,
            extra,
        });
        Ok(msg_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn front(&self, n: usize) -> impl Iterator<Item = &PendingReading> {
        self.items.iter().take(n)
    }

    /// Removes acknowledged message ids; returns how many were removed.
    pub(crate) fn remove(&mut self, ids: &std::collections::HashSet<u64>) -> usize {
        let before = self.items.len();
        self.items.retain(|r| !ids.contains(&r.msg_id));
        before - self.items.len()
    }

    /// Writes the queue to its file (write to a temporary file, fsync, rename).
    pub(crate) fn persist(&self) -> std::io::Result<()> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let p = Persisted {
            next_msg_id: self.next_msg_id,
            pending: self.items.iter().cloned().collect(),
        };
        let tmp = tmp_path(path);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string(&p)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `queue_capacity` at its edge: the push after the capacity fails with `QueueFull` and
    /// takes no message id; an acknowledgement makes room again; the persisted queue keeps
    /// every pending reading and the next id across a restart.
    #[test]
    fn queue_is_bounded_and_survives_a_restart() {
        let file = std::env::temp_dir().join(format!("iotseal-queue-{}.json", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let mut q = Queue::new(3, Some(file.clone())).unwrap();
        for i in 0..3u64 {
            assert_eq!(q.push(i, vec![(1, 20.5)], vec![]), Ok(i + 1));
        }
        assert_eq!(q.push(9, vec![], vec![]), Err(QueueFull));
        assert_eq!(q.len(), 3);
        assert_eq!(q.next_msg_id, 4, "a refused push takes no id");
        assert_eq!(q.remove(&[2u64].into_iter().collect()), 1);
        assert_eq!(q.push(10, vec![], vec![7]), Ok(4));
        assert_eq!(q.push(11, vec![], vec![]), Err(QueueFull));
        q.persist().unwrap();

        let q2 = Queue::new(3, Some(file.clone())).unwrap();
        let ids: Vec<u64> = q2.front(10).map(|r| r.msg_id).collect();
        assert_eq!(ids, [1, 3, 4]);
        assert_eq!(q2.next_msg_id, 5);
        assert_eq!(q2.front(10).last().unwrap().extra, [7]);
        let _ = std::fs::remove_file(&file);
    }
}
