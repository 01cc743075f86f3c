//! [`MemoryStorage`]: storage in memory, volatile. What `storage = "memory:"` uses (demos and
//! tests); the reference model of the storage contract (`tests/contract`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::{
    BoxFuture, DeviceRecord, NewReading, ReadingQuery, SessionEvent, Storage, StorageError,
    StoreOutcome, StoredReading, check_payload, stored_reading,
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
        let mut scratch = Vec::new();
        if let Err(e) = readings
            .iter()
            .try_for_each(|r| check_payload(r, &mut scratch))
        {
            return ready(Err(e));
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
            // As the databases do: the latest receive time of the call, duplicates included.
            if let Some(d) = m.devices.get_mut(&*r.device_id) {
                d.last_seen_ms = Some(d.last_seen_ms.unwrap_or(0).max(r.received_ms));
            }
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
        // The checks of the databases, with their messages.
        if device.id.is_empty() || device.id.len() > 32 {
            return ready(Err(StorageError(format!(
                "device id must be 1 to 32 bytes, got {}",
                device.id.len()
            ))));
        }
        if hex::decode(&device.public_key_hex).map_or(true, |k| k.is_empty()) {
            return ready(Err(StorageError(format!(
                "device {:?}: the public key must be non-empty hex",
                device.id
            ))));
        }
        let too_large = |v: u64| i64::try_from(v).is_err();
        if too_large(device.created_ms) || device.last_seen_ms.is_some_and(too_large) {
            return ready(Err(StorageError(format!(
                "device {:?}: a time is out of range (max 2^63-1)",
                device.id
            ))));
        }
        let mut m = self.lock();
        if m.devices.contains_key(&device.id) {
            return ready(Err(StorageError(format!(
                "device {:?} is already registered",
                device.id
            ))));
        }
        let key = device.public_key_hex.to_ascii_lowercase();
        if let Some(owner) = m
            .devices
            .values()
            .find(|d| d.public_key_hex.to_ascii_lowercase() == key)
        {
            return ready(Err(StorageError(format!(
                "public key is already registered (device {:?})",
                owner.id
            ))));
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
        let mut v: Vec<&NewReading> = m
            .readings
            .values()
            .filter(|r| *r.device_id == *q.device_id)
            .filter(|r| q.from_ms.is_none_or(|f| r.device_time_ms >= f))
            .filter(|r| q.to_ms.is_none_or(|t| r.device_time_ms < t))
            .collect();
        v.sort_by_key(|r| (r.device_time_ms, r.msg_id));
        v.truncate(q.limit.unwrap_or(1000).min(100_000) as usize);
        // As the databases do: only the payload and the receive time are kept; the rest is
        // decoded from the payload.
        let mut scratch = Vec::new();
        ready(
            v.into_iter()
                .map(|r| stored_reading(&r.device_id, r.received_ms, &r.payload, &mut scratch))
                .collect(),
        )
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
