//! Established sessions in memory: bounded in total and per device, dropped when idle or past
//! their lifetime. Each session has its own async lock, held while its records are opened,
//! stored and marked, so one session's records are processed in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use iotseal_proto::Suite;
use iotseal_proto::record::Session;

use crate::registry::DeviceState;

/// Why a session left the table (the audit trail's event name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The device sent a Close record.
    Closed,
    /// Idle too long or past its lifetime.
    Expired,
    /// The device was revoked.
    Revoked,
    /// Evicted to make room (per-device or total bound).
    Evicted,
}

impl EndReason {
    /// The audit event name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Evicted => "evicted",
        }
    }
}

/// What [`SessionTable::sweep`] did.
#[derive(Debug)]
pub struct Swept {
    /// The sessions removed, and why.
    pub ended: Vec<(Arc<SessionEntry>, EndReason)>,
    /// Sessions parked now (idle long enough and not in use).
    pub parked: usize,
    /// Of which parked by this sweep.
    pub newly_parked: usize,
}

/// The mutable part of a session, behind its lock.
#[derive(Debug)]
pub struct SessionState {
    /// The core session.
    pub session: Session,
    /// When the last acknowledgement that answered only replays was sent, ms.
    pub last_replay_ack_ms: u64,
}

/// One established session.
#[derive(Debug)]
pub struct SessionEntry {
    /// Session id.
    pub id: u32,
    /// The authenticated device.
    pub device: Arc<DeviceState>,
    /// The suite.
    pub suite: Suite,
    /// When it was established, ms.
    pub established_ms: u64,
    last_used_ms: AtomicU64,
    ended: AtomicBool,
    /// The session, locked while its records are processed.
    pub state: tokio::sync::Mutex<SessionState>,
}

impl SessionEntry {
    /// A new entry.
    pub fn new(session: Session, device: Arc<DeviceState>, now_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            id: session.id(),
            suite: session.suite(),
            device,
            established_ms: now_ms,
            last_used_ms: AtomicU64::new(now_ms),
            ended: AtomicBool::new(false),
            state: tokio::sync::Mutex::new(SessionState {
                session,
                last_replay_ack_ms: 0,
            }),
        })
    }

    /// Notes use at `now_ms`.
    pub fn touch(&self, now_ms: u64) {
        self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Last use, ms.
    pub fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    /// Whether the session was removed from the table (or its device revoked): its records
    /// are refused from now on.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire) || self.device.is_revoked()
    }

    fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<u32, Arc<SessionEntry>>,
    /// Each device's sessions, oldest first.
    by_device: HashMap<Arc<str>, Vec<u32>>,
}

impl Inner {
    fn remove(&mut self, id: u32) -> Option<Arc<SessionEntry>> {
        let e = self.by_id.remove(&id)?;
        if let Some(v) = self.by_device.get_mut(&*e.device.id) {
            v.retain(|&x| x != id);
            if v.is_empty() {
                self.by_device.remove(&*e.device.id);
            }
        }
        e.end();
        Some(e)
    }
}

/// The bounded session table.
#[derive(Debug)]
pub struct SessionTable {
    inner: Mutex<Inner>,
    max_total: usize,
    max_per_device: usize,
}

impl SessionTable {
    /// An empty table.
    pub fn new(max_total: usize, max_per_device: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max_total: max_total.max(1),
            max_per_device: max_per_device.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a session id is taken.
    pub fn contains(&self, id: u32) -> bool {
        self.lock().by_id.contains_key(&id)
    }

    /// A session by id.
    pub fn get(&self, id: u32) -> Option<Arc<SessionEntry>> {
        self.lock().by_id.get(&id).cloned()
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions of one device.
    pub fn count_for(&self, device_id: &str) -> usize {
        self.lock().by_device.get(device_id).map_or(0, Vec::len)
    }

    /// Adds a session; returns the sessions evicted to make room (the device's oldest first,
    /// then the least recently used of all).
    pub fn insert(&self, e: Arc<SessionEntry>) -> Vec<Arc<SessionEntry>> {
        let mut evicted = Vec::new();
        let mut t = self.lock();
        if let Some(old) = t.remove(e.id) {
            // Cannot happen (ids are allocated against this table); never keep two.
            evicted.push(old);
        }
        let ids = t.by_device.get(&*e.device.id).cloned().unwrap_or_default();
        let excess = (ids.len() + 1).saturating_sub(self.max_per_device);
        for id in ids.into_iter().take(excess) {
            evicted.extend(t.remove(id));
        }
        while t.by_id.len() >= self.max_total {
            let Some(lru) = t
                .by_id
                .values()
                .min_by_key(|x| x.last_used_ms())
                .map(|x| x.id)
            else {
                break;
            };
            evicted.extend(t.remove(lru));
        }
        t.by_device
            .entry(e.device.id.clone())
            .or_default()
            .push(e.id);
        t.by_id.insert(e.id, e);
        evicted
    }

    /// Removes a session.
    pub fn remove(&self, id: u32) -> Option<Arc<SessionEntry>> {
        self.lock().remove(id)
    }

    /// Removes every session of a device.
    pub fn remove_device(&self, device_id: &str) -> Vec<Arc<SessionEntry>> {
        let mut t = self.lock();
        let ids = t.by_device.get(device_id).cloned().unwrap_or_default();
        ids.into_iter().filter_map(|id| t.remove(id)).collect()
    }

    /// One pass over the table: removes the sessions idle for `idle_ms` or older than
    /// `lifetime_ms`, and those of revoked devices, then parks the remaining ones unused for
    /// `park_ms` (their key objects dropped; see [`Session::park`]) that no request holds
    /// now. The table lock is held only for that pass, never while a session is locked.
    pub fn sweep(
        &self,
        now: iotseal_proto::Time,
        idle_ms: u64,
        lifetime_ms: u64,
        park_ms: u64,
    ) -> Swept {
        let now_ms = now.as_millis();
        let mut idle = Vec::new();
        let ended = {
            let mut t = self.lock();
            let mut due = Vec::new();
            for e in t.by_id.values() {
                let unused_ms = now_ms.saturating_sub(e.last_used_ms());
                if e.device.is_revoked() {
                    due.push((e.id, EndReason::Revoked));
                } else if unused_ms >= idle_ms
                    || now_ms.saturating_sub(e.established_ms) >= lifetime_ms
                {
                    due.push((e.id, EndReason::Expired));
                } else if unused_ms >= park_ms {
                    idle.push(Arc::clone(e));
                }
            }
            due.into_iter()
                .filter_map(|(id, r)| t.remove(id).map(|e| (e, r)))
                .collect()
        };
        let mut swept = Swept {
            ended,
            parked: 0,
            newly_parked: 0,
        };
        for e in idle {
            // A session in use is skipped: it is not idle, and the sweep never waits.
            if let Ok(mut st) = e.state.try_lock() {
                if !st.session.is_parked() {
                    st.session.park(now);
                    swept.newly_parked += 1;
                }
                swept.parked += 1;
            }
        }
        swept
    }
}
