//! [`MemoryStorage`]: storage in memory, volatile. What `storage = "memory:"` uses (demos and
//! tests); the reference model of the storage contract (`tests/contract`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::{
    BoxFuture, DeviceRecord, NewReading, ReadingQuery, SessionEvent, Storage, StorageError,
    StoreOutcome, StoredReading,
};

#[derive(Debug, Default)]
struct Mem {
    devices: BTreeMap<String, DeviceRecord>,
    readings: BTreeMap<(Arc<str>, u64), NewReading>,
    events: Vec<SessionEvent>,
    store_calls: u64,
}

/// Storage in memory.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    mem: Mutex<Mem>,
    fail_stores: AtomicBool,
    hold_events: Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
}

impl MemoryStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, Mem> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored reading, by (device, message id).
    pub fn all_readings(&self) -> Vec<NewReading> {
        self.lock().readings.values().cloned().collect()
    }

    /// The audit trail.
    pub fn events(&self) -> Vec<SessionEvent> {
        self.lock().events.clone()
    }

    /// How many `store_readings` calls were made.
    pub fn store_calls(&self) -> u64 {
        self.lock().store_calls
    }

    /// Test hook: session events wait (the audit writer blocks) until the returned sender
    /// sends `true`.
    #[doc(hidden)]
    pub fn dangerous_hold_events(&self) -> tokio::sync::watch::Sender<bool> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        *self.hold_events.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
        tx
    }

    /// Test hook: make every `store_readings` fail (or succeed again).
    #[doc(hidden)]
    pub fn dangerous_fail_stores(&self, fail: bool) {
        self.fail_stores.store(fail, Ordering::SeqCst);
    }
}

fn ready<T: Send + 'static>(v: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(v))
}

impl Storage for MemoryStorage {
    fn store_readings(
        &self,
        readings: Vec<NewReading>,
    ) -> BoxFuture<'_, Result<StoreOutcome, StorageError>> {
        if self.fail_stores.load(Ordering::SeqCst) {
            return ready(Err(StorageError("injected failure".into())));
        }
        let mut m = self.lock();
        m.store_calls += 1;
        let mut out = StoreOutcome::default();
        for r in readings {
            let i = match out.per_device.iter().position(|(d, _)| *d == r.device_id) {
                Some(i) => i,
                None => {
                    out.per_device.push((r.device_id.clone(), 0));
                    out.per_device.len() - 1
                }
            };
            let k = (r.device_id.clone(), r.msg_id);
            if m.readings.contains_key(&k) {
                out.duplicates += 1;
            } else {
                if let Some(d) = m.devices.get_mut(&*r.device_id) {
                    d.readings += 1;
                }
                m.readings.insert(k, r);
                out.inserted += 1;
                out.per_device[i].1 += 1;
            }
        }
        ready(Ok(out))
    }

    fn add_device(&self, device: DeviceRecord) -> BoxFuture<'_, Result<(), StorageError>> {
        let mut m = self.lock();
        if m.devices.contains_key(&device.id)
            || m.devices
                .values()
                .any(|d| d.public_key_hex == device.public_key_hex)
        {
            return ready(Err(StorageError("device id or key exists".into())));
        }
        m.devices.insert(device.id.clone(), device);
        ready(Ok(()))
    }

    fn revoke_device(&self, id: String) -> BoxFuture<'_, Result<bool, StorageError>> {
        let mut m = self.lock();
        ready(Ok(m
            .devices
            .get_mut(&id)
            .map(|d| d.revoked = true)
            .is_some()))
    }

    fn device(&self, id: String) -> BoxFuture<'_, Result<Option<DeviceRecord>, StorageError>> {
        ready(Ok(self.lock().devices.get(&id).cloned()))
    }

    fn devices(&self) -> BoxFuture<'_, Result<Vec<DeviceRecord>, StorageError>> {
        ready(Ok(self.lock().devices.values().cloned().collect()))
    }

    fn touch_device(&self, id: String, at_ms: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        if let Some(d) = self.lock().devices.get_mut(&id) {
            d.last_seen_ms = Some(d.last_seen_ms.unwrap_or(0).max(at_ms));
        }
        ready(Ok(()))
    }

    fn readings(&self, q: ReadingQuery) -> BoxFuture<'_, Result<Vec<StoredReading>, StorageError>> {
        let m = self.lock();
        let mut v: Vec<StoredReading> = m
            .readings
            .values()
            .filter(|r| *r.device_id == *q.device_id)
            .filter(|r| q.from_ms.is_none_or(|f| r.device_time_ms >= f))
            .filter(|r| q.to_ms.is_none_or(|t| r.device_time_ms < t))
            .map(|r| StoredReading {
                device_id: r.device_id.to_string(),
                msg_id: r.msg_id,
                device_time_ms: r.device_time_ms,
                received_ms: r.received_ms,
                payload_hex: hex::encode(&r.payload),
                values: r.values.iter().map(|(s, v)| (s.to_string(), *v)).collect(),
            })
            .collect();
        v.sort_by_key(|r| (r.device_time_ms, r.msg_id));
        v.truncate(q.limit.unwrap_or(100_000).min(100_000) as usize);
        ready(Ok(v))
    }

    fn count_readings(&self) -> BoxFuture<'_, Result<u64, StorageError>> {
        ready(Ok(self.lock().readings.len() as u64))
    }

    fn session_event(&self, ev: SessionEvent) -> BoxFuture<'_, Result<(), StorageError>> {
        let hold = self
            .hold_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Box::pin(async move {
            if let Some(mut rx) = hold {
                let _ = rx.wait_for(|open| *open).await;
            }
            self.lock().events.push(ev);
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        ready(Ok(()))
    }
}
