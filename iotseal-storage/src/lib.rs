//! Storage behind a trait: the embedded default is SQLite ([`sqlite::SqliteStorage`]); other
//! backends (PostgreSQL for scale-out) implement the same trait with the same rules:
//!
//! - [`Storage::store_readings`] returns only after the readings are committed durably; only
//!   then may the gateway acknowledge them.
//! - A reading is identified by (device id, message id): storing it again is a no-op counted
//!   as a duplicate, never a second row.
//! - A batch is all-or-nothing: a crash leaves either every reading of a call or none.
//! - A reading is stored as its payload (the encoded reading as it arrived, bytes) and its
//!   receive time: its values are stored once, inside the payload, and decoded when read
//!   (docs/decisions.md D37). A payload that does not decode, or whose message id or device
//!   time differ from the reading's, is refused by [`Storage::store_readings`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod json;
pub mod memory;
pub mod postgres;
pub mod sqlite;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use iotseal_proto::SigAlg;
use iotseal_proto::reading::{self, ReadingRef, SensorKind};

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage failure. Details are for logs only.
#[derive(Debug)]
pub struct StorageError(pub String);

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for StorageError {}

/// A sensor name: the built-in kinds' names are borrowed, others owned.
pub type SensorName = Cow<'static, str>;

/// A verified, decrypted reading to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewReading {
    /// The authenticated device (shared by the readings of a request).
    pub device_id: Arc<str>,
    /// The device's message id (unique per device).
    pub msg_id: u64,
    /// Device timestamp, ms since the Unix epoch.
    pub device_time_ms: u64,
    /// Gateway receive time, ms since the Unix epoch.
    pub received_ms: u64,
    /// The encoded reading as it arrived (see `iotseal_proto::reading`); the readings of a
    /// record share one buffer. What is stored: the values are decoded from it when read.
    pub payload: bytes::Bytes,
}

impl NewReading {
    /// The values of the payload, decoded: (sensor name, value), in payload order.
    pub fn decode_values(&self) -> Result<Vec<(SensorName, f32)>, StorageError> {
        let mut scratch = Vec::new();
        let r = decode_payload(&mut scratch, &self.payload)?;
        Ok(r.values().map(|(k, v)| (sensor_name(k), v)).collect())
    }
}

/// The name a value is stored and shown under (borrowed for the built-in kinds): the kind's
/// name, or `other_<code>` for a kind this build does not know.
pub fn sensor_name(k: SensorKind) -> SensorName {
    match k {
        SensorKind::Other(c) => SensorName::Owned(format!("other_{c}")),
        k => SensorName::Borrowed(k.name()),
    }
}

/// Decodes one reading's payload (an encoded reading without the batch's count), through
/// `scratch` (reused by callers that decode many): the batch decoder of
/// `iotseal_proto::reading` on a one-reading batch, so the payload must be exactly one
/// reading, every length bounded by the decoder.
pub(crate) fn decode_payload<'s>(
    scratch: &'s mut Vec<u8>,
    payload: &[u8],
) -> Result<ReadingRef<'s>, StorageError> {
    scratch.clear();
    scratch.push(1);
    scratch.extend_from_slice(payload);
    let bad = |e: iotseal_proto::error::Malformed| {
        StorageError(format!("payload is not one encoded reading: {e:?}"))
    };
    match reading::iter_batch(scratch).map_err(bad)?.next() {
        Some(r) => r.map_err(bad),
        None => Err(StorageError("payload is not one encoded reading".into())),
    }
}

/// Checks that a reading's payload decodes and names its message id and device time.
pub(crate) fn check_payload(r: &NewReading, scratch: &mut Vec<u8>) -> Result<(), StorageError> {
    let d = decode_payload(scratch, &r.payload).map_err(|e| {
        StorageError(format!(
            "reading {} of {:?}: {}",
            r.msg_id, r.device_id, e.0
        ))
    })?;
    if d.msg_id != r.msg_id || d.time_ms != r.device_time_ms {
        return Err(StorageError(format!(
            "reading {} of {:?}: the payload says message {} at {} ms, not {} at {} ms",
            r.msg_id, r.device_id, d.msg_id, d.time_ms, r.msg_id, r.device_time_ms
        )));
    }
    Ok(())
}

/// A stored reading built from what is stored: its payload (decoded here) and receive time.
pub(crate) fn stored_reading(
    device_id: &str,
    received_ms: u64,
    payload: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<StoredReading, StorageError> {
    let r = decode_payload(scratch, payload)
        .map_err(|e| StorageError(format!("a stored reading of {device_id:?}: {}", e.0)))?;
    Ok(StoredReading {
        device_id: device_id.to_owned(),
        msg_id: r.msg_id,
        device_time_ms: r.time_ms,
        received_ms,
        payload_hex: hex::encode(payload),
        values: r
            .values()
            .map(|(k, v)| (sensor_name(k).into_owned(), v))
            .collect(),
    })
}

/// Result of a store call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Readings written: new rows (the sum of [`StoreOutcome::per_device`]).
    pub inserted: usize,
    /// Readings not written: already stored (same device and message id), by an earlier call
    /// or earlier in the same call.
    pub duplicates: usize,
    /// Readings written per device: every device of the call once, in the order of its first
    /// reading in the call, with 0 when all of its readings were duplicates. What the device
    /// counters (`readings` of the admin API) add.
    pub per_device: Vec<(Arc<str>, usize)>,
}

impl StoreOutcome {
    /// Readings written for `device` by the call (0 if the call had none of its readings).
    pub fn inserted_for(&self, device: &str) -> usize {
        self.per_device
            .iter()
            .find(|(d, _)| &**d == device)
            .map_or(0, |(_, n)| *n)
    }
}

/// A registered device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceRecord {
    /// Identifier (1 to 32 bytes of UTF-8).
    pub id: String,
    /// Signature algorithm of its key.
    pub alg: SigAlg,
    /// Public key, hex.
    pub public_key_hex: String,
    /// Revoked devices cannot handshake; their sessions end.
    pub revoked: bool,
    /// Registration time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Last accepted record or handshake, ms since the Unix epoch.
    pub last_seen_ms: Option<u64>,
    /// Readings stored for this device.
    pub readings: u64,
}

/// A stored reading, as queried. The admin API shows it as it is: the field comments are its
/// OpenAPI schema's descriptions.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[schema(description = "A reading stored for a device.")]
pub struct StoredReading {
    /// The device's id.
    pub device_id: String,
    /// The reading's message id, chosen by the device and unique per device: a reading
    /// received again with the same id is stored once. A decimal string, not a JSON number:
    /// ids go up to 2^62 − 1 and JavaScript's numbers are exact only up to 2^53.
    #[serde(serialize_with = "crate::json::msg_id_json")]
    #[schema(value_type = String, pattern = "^(0|[1-9][0-9]{0,18})$", example = "17")]
    pub msg_id: u64,
    /// When the reading was taken, by the device's clock: ms since the Unix epoch (`time_ms`
    /// of docs/protocol.md §8.12). `from` and `to` select on it.
    pub device_time_ms: u64,
    /// When the gateway received the reading (its first stored copy): ms since the Unix
    /// epoch, gateway clock.
    pub received_ms: u64,
    /// The reading's encoding as the device sent it, lowercase hex: `msg_id`, `time_ms`, `n`,
    /// the `n` (sensor kind, f32) values and the `extra` bytes of docs/protocol.md §8.12. One
    /// reading of the record's batch, without the batch's `count` prefix. `extra` (opaque
    /// application bytes) is only here.
    #[schema(
        pattern = "^([0-9a-f]{2})+$",
        example = "11c000019b76daa800020141ac0000024220000000"
    )]
    pub payload_hex: String,
    /// Values decoded from the payload when read: (sensor name, value), in payload order; NaN and
    /// ±infinity as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`.
    #[serde(serialize_with = "crate::json::values_json")]
    #[schema(schema_with = json::values_schema)]
    pub values: Vec<(String, f32)>,
}

/// Which readings to return.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadingQuery {
    /// The device.
    pub device_id: String,
    /// Device time from (inclusive), ms.
    pub from_ms: Option<u64>,
    /// Device time to (exclusive), ms.
    pub to_ms: Option<u64>,
    /// At most this many (bounded by the backend, at most 100,000).
    pub limit: Option<u32>,
}

/// An entry of the sessions' audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionEvent {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Device id (None before the device authenticated).
    pub device_id: Option<String>,
    /// Session id.
    pub session_id: u32,
    /// `established`, `closed`, `expired`, `revoked`, `refused:<reason>`.
    pub event: String,
    /// Suite name.
    pub suite: String,
}

/// Durable storage of devices, readings and the session audit trail.
pub trait Storage: Send + Sync + 'static {
    /// Stores readings in one transaction; returns after commit.
    fn store_readings(
        &self,
        readings: Vec<NewReading>,
    ) -> BoxFuture<'_, Result<StoreOutcome, StorageError>>;
    /// Registers a device. Fails if the id exists or the public key is already registered.
    fn add_device(&self, device: DeviceRecord) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Marks a device revoked; false if unknown.
    fn revoke_device(&self, id: String) -> BoxFuture<'_, Result<bool, StorageError>>;
    /// One device.
    fn device(&self, id: String) -> BoxFuture<'_, Result<Option<DeviceRecord>, StorageError>>;
    /// Every device.
    fn devices(&self) -> BoxFuture<'_, Result<Vec<DeviceRecord>, StorageError>>;
    /// Records that a device was seen at `at_ms`.
    fn touch_device(&self, id: String, at_ms: u64) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Records several last-seen times at once (the sweeper's periodic flush). Backends with
    /// group commit override it to write them all in one transaction; the default submits
    /// them concurrently so they can share commits.
    fn touch_devices(&self, seen: Vec<(String, u64)>) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let calls = seen
                .into_iter()
                .map(|(id, at_ms)| self.touch_device(id, at_ms));
            futures_util::future::join_all(calls)
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .map(drop)
        })
    }
    /// Readings of a device in a time range, oldest first.
    fn readings(&self, q: ReadingQuery) -> BoxFuture<'_, Result<Vec<StoredReading>, StorageError>>;
    /// Total readings stored.
    fn count_readings(&self) -> BoxFuture<'_, Result<u64, StorageError>>;
    /// Appends to the session audit trail.
    fn session_event(&self, ev: SessionEvent) -> BoxFuture<'_, Result<(), StorageError>>;
    /// Waits until everything accepted so far is committed; then the storage may be dropped.
    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>>;
}
