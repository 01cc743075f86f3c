//! The bounded in-memory queue of readings not yet acknowledged, in message-id order.

use alloc::vec::Vec;
use core::fmt;

use iotseal_proto::Time;
use iotseal_proto::codec::{VARINT_MAX, varint_len};
use iotseal_proto::reading::{MAX_EXTRA, MAX_VALUES, Reading, SensorKind};

use crate::seqmap::SeqMap;

/// A reading's message id: assigned by the engine, unique per device (the gateway stores
/// each (device, message id) once, so a reading sent again is stored once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub u64);

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A reading to queue; the engine gives it its message id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// When it was taken, by the device clock; `None`: the engine's device time at
    /// [`crate::Engine::push`] (the caller's `now` plus any adopted clock correction).
    pub time: Option<Time>,
    /// Measured values (at most 32).
    pub values: Vec<(SensorKind, f32)>,
    /// Opaque application bytes (at most 4096).
    pub extra: Vec<u8>,
}

/// Why [`crate::Engine::push`] refused a reading. A refused push takes no message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushError {
    /// The queue holds `capacity` readings: wait for acknowledgements.
    QueueFull {
        /// The configured capacity.
        capacity: usize,
    },
    /// More values than one reading carries (32).
    TooManyValues(usize),
    /// More opaque bytes than one reading carries (4096).
    ExtraTooLong(usize),
    /// Message ids are used up (2^62 − 1 readings).
    IdsExhausted,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::QueueFull { capacity } => write!(f, "reading queue full ({capacity})"),
            Self::TooManyValues(n) => write!(f, "{n} values: at most {MAX_VALUES} per reading"),
            Self::ExtraTooLong(n) => write!(f, "{n} extra bytes: at most {MAX_EXTRA}"),
            Self::IdsExhausted => f.write_str("message ids used up"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PushError {}

/// A queued reading and the length of its encoding in a data record.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) reading: Reading,
    pub(crate) encoded_len: usize,
}

/// The length of `r`'s encoding (docs/protocol.md §8.12), without encoding it.
fn encoded_len(r: &Reading) -> usize {
    varint_len(r.msg_id)
        + varint_len(r.time_ms.min(VARINT_MAX))
        + 1
        + 5 * r.values.len()
        + varint_len(r.extra.len() as u64)
        + r.extra.len()
}

/// Pending readings by message id (ids only grow as readings are pushed: [`SeqMap`]).
#[derive(Debug)]
pub(crate) struct Queue {
    items: SeqMap<Queued>,
    capacity: usize,
    next_msg_id: u64,
}

impl Queue {
    pub(crate) fn new(capacity: usize, first_msg_id: u64) -> Self {
        Self {
            items: SeqMap::new(),
            capacity,
            next_msg_id: first_msg_id,
        }
    }

    fn check(values: usize, extra: usize) -> Result<(), PushError> {
        if values > MAX_VALUES {
            return Err(PushError::TooManyValues(values));
        }
        if extra > MAX_EXTRA {
            return Err(PushError::ExtraTooLong(extra));
        }
        Ok(())
    }

    pub(crate) fn push(&mut self, time: Time, s: Sample) -> Result<MsgId, PushError> {
        Self::check(s.values.len(), s.extra.len())?;
        if self.items.len() >= self.capacity {
            return Err(PushError::QueueFull {
                capacity: self.capacity,
            });
        }
        let id = self.next_msg_id;
        if id > VARINT_MAX {
            return Err(PushError::IdsExhausted);
        }
        self.next_msg_id = id + 1;
        let reading = Reading {
            msg_id: id,
            time_ms: s.time.unwrap_or(time).as_millis(),
            values: s.values,
            extra: s.extra,
        };
        let (id, q) = Self::queued(reading);
        self.items.insert(id, q);
        Ok(MsgId(id))
    }

    fn queued(reading: Reading) -> (u64, Queued) {
        let encoded_len = encoded_len(&reading);
        (
            reading.msg_id,
            Queued {
                reading,
                encoded_len,
            },
        )
    }

    /// Puts back readings of an earlier run (a persisted queue) and moves the next id past
    /// them and past `next_msg_id`.
    pub(crate) fn restore(
        &mut self,
        next_msg_id: u64,
        readings: Vec<Reading>,
    ) -> Result<(), PushError> {
        for r in &readings {
            Self::check(r.values.len(), r.extra.len())?;
            if r.msg_id > VARINT_MAX {
                return Err(PushError::IdsExhausted);
            }
        }
        let new = readings
            .iter()
            .filter(|r| !self.items.contains_key(r.msg_id))
            .count();
        if self.items.len() + new > self.capacity {
            return Err(PushError::QueueFull {
                capacity: self.capacity,
            });
        }
        let mut next = self.next_msg_id.max(next_msg_id);
        for r in &readings {
            next = next.max(r.msg_id.saturating_add(1));
        }
        self.items.extend(readings.into_iter().map(Self::queued));
        self.next_msg_id = next;
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.items.len() >= self.capacity
    }

    pub(crate) fn next_msg_id(&self) -> u64 {
        self.next_msg_id
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Queued> {
        self.items.values()
    }

    pub(crate) fn get(&self, id: u64) -> Option<&Reading> {
        self.items.get(id).map(|q| &q.reading)
    }

    /// Forgets an acknowledged reading; whether it was still queued.
    pub(crate) fn remove(&mut self, id: u64) -> bool {
        self.items.remove(id).is_some()
    }
}
