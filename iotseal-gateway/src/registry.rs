//! The device registry the handshake consults: an in-memory cache of the storage's devices,
//! updated by the admin API. Revocation takes effect at once (an atomic flag every session of
//! the device checks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use iotseal_proto::SigAlg;
use iotseal_proto::handshake::{DeviceRegistry, RegisteredDevice};

use crate::storage::DeviceRecord;

/// A registered device and its live counters.
#[derive(Debug)]
pub struct DeviceState {
    /// Identifier (shared with the readings stored for it).
    pub id: Arc<str>,
    /// Key algorithm.
    pub alg: SigAlg,
    /// Public key.
    pub public_key: Vec<u8>,
    /// Registration time, ms.
    pub created_ms: u64,
    revoked: AtomicBool,
    last_seen_ms: AtomicU64,
    last_seen_flushed_ms: AtomicU64,
    handshakes: AtomicU64,
    records: AtomicU64,
    readings_stored: AtomicU64,
    stored_before: u64,
}

impl DeviceState {
    fn from_record(d: &DeviceRecord) -> Option<Self> {
        let public_key = hex::decode(&d.public_key_hex).ok()?;
        let seen = d.last_seen_ms.unwrap_or(0);
        Some(Self {
            id: d.id.as_str().into(),
            alg: d.alg,
            public_key,
            created_ms: d.created_ms,
            revoked: AtomicBool::new(d.revoked),
            last_seen_ms: AtomicU64::new(seen),
            last_seen_flushed_ms: AtomicU64::new(seen),
            handshakes: AtomicU64::new(0),
            records: AtomicU64::new(0),
            readings_stored: AtomicU64::new(0),
            stored_before: d.readings,
        })
    }

    /// Whether the device is revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Notes activity at `now_ms`.
    pub fn seen(&self, now_ms: u64) {
        self.last_seen_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Last activity, ms (None if never seen).
    pub fn last_seen_ms(&self) -> Option<u64> {
        Some(self.last_seen_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    /// Counts a completed handshake.
    pub fn handshake_done(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts accepted records.
    pub fn accepted(&self, records: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
    }

    /// Counts readings stored: new rows, as the storage reported them
    /// ([`StoreOutcome::per_device`](crate::storage::StoreOutcome::per_device)); a reading
    /// received again (same message id) is not counted twice.
    pub fn stored(&self, readings: u64) {
        self.readings_stored.fetch_add(readings, Ordering::Relaxed);
    }

    /// (handshakes, records accepted, readings stored) since the gateway started.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.handshakes.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
            self.readings_stored.load(Ordering::Relaxed),
        )
    }

    /// Readings in storage when loaded plus those this gateway stored since (rows, after
    /// deduplication by message id).
    pub fn readings_total(&self) -> u64 {
        self.stored_before + self.readings_stored.load(Ordering::Relaxed)
    }

    /// The last-seen time if it changed since the previous call (for batched storage writes).
    pub fn take_unflushed_seen(&self) -> Option<u64> {
        let seen = self.last_seen_ms.load(Ordering::Relaxed);
        let old = self.last_seen_flushed_ms.swap(seen, Ordering::Relaxed);
        (seen > old).then_some(seen)
    }
}

/// The registry: device id → state.
#[derive(Debug, Default)]
pub struct Registry {
    map: RwLock<HashMap<Vec<u8>, Arc<DeviceState>>>,
}

/// Why a registration was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The id is taken.
    IdExists,
    /// The public key is registered to another device.
    KeyExists,
    /// The record is invalid (bad hex).
    Invalid,
}

impl Registry {
    /// Loads devices (as read from storage).
    pub fn load(devices: &[DeviceRecord]) -> Self {
        let map = devices
            .iter()
            .filter_map(|d| DeviceState::from_record(d).map(|s| (d.id.as_bytes().to_vec(), s)))
            .map(|(k, s)| (k, Arc::new(s)))
            .collect();
        Self {
            map: RwLock::new(map),
        }
    }

    /// A device by id.
    pub fn get(&self, id: &[u8]) -> Option<Arc<DeviceState>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Every device, sorted by id.
    pub fn all(&self) -> Vec<Arc<DeviceState>> {
        let mut v: Vec<_> = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Checks that `d` could be registered (id and key unused).
    pub fn check_new(&self, d: &DeviceRecord) -> Result<(), RegisterError> {
        let pk = hex::decode(&d.public_key_hex).map_err(|_| RegisterError::Invalid)?;
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(d.id.as_bytes()) {
            return Err(RegisterError::IdExists);
        }
        if m.values().any(|x| x.public_key == pk) {
            return Err(RegisterError::KeyExists);
        }
        Ok(())
    }

    /// Adds a device (after storage accepted it).
    pub fn insert(&self, d: &DeviceRecord) -> Result<Arc<DeviceState>, RegisterError> {
        let s = Arc::new(DeviceState::from_record(d).ok_or(RegisterError::Invalid)?);
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        if m.contains_key(d.id.as_bytes()) {
            return Err(RegisterError::IdExists);
        }
        m.insert(d.id.as_bytes().to_vec(), s.clone());
        Ok(s)
    }

    /// Marks a device revoked; returns it, or None if unknown.
    pub fn revoke(&self, id: &[u8]) -> Option<Arc<DeviceState>> {
        let d = self.get(id)?;
        d.revoked.store(true, Ordering::Release);
        Some(d)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are no devices.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeviceRegistry for Registry {
    fn lookup(&self, device_id: &[u8]) -> Option<RegisteredDevice> {
        let d = self.get(device_id)?;
        Some(RegisteredDevice {
            alg: d.alg,
            public_key: d.public_key.clone(),
            revoked: d.is_revoked(),
            policy: None,
        })
    }
}
