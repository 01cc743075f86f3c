//! A data record's plaintext turned into rows for the storage.

use std::sync::Arc;

use bytes::Bytes;
use iotseal_proto::Time;
use iotseal_proto::error::Malformed;
use iotseal_proto::reading::{self, ReadingRef, SensorKind};

use crate::storage::{NewReading, SensorName};

/// The name a value is stored under (borrowed for the built-in kinds).
pub fn sensor_name(k: SensorKind) -> SensorName {
    match k {
        SensorKind::Other(c) => SensorName::Owned(format!("other_{c}")),
        k => SensorName::Borrowed(k.name()),
    }
}

/// Appends the readings of a data record's plaintext to `out`, all of them or (on an error)
/// none; returns how many. Their payloads are slices of `plain` (the buffer the record was
/// opened in), not copies.
pub(super) fn push_readings(
    out: &mut Vec<NewReading>,
    device_id: &Arc<str>,
    plain: &Bytes,
    now: Time,
) -> Result<usize, Malformed> {
    let readings = reading::iter_batch(plain)?;
    let start = out.len();
    out.reserve(readings.size_hint().1.unwrap_or(0));
    for r in readings {
        match r {
            Ok(r) => out.push(new_reading(device_id, plain, r, now)),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(out.len() - start)
}

/// `r`'s payload is sliced out of `plain`, the buffer it was decoded from.
fn new_reading(device_id: &Arc<str>, plain: &Bytes, r: ReadingRef<'_>, now: Time) -> NewReading {
    NewReading {
        device_id: device_id.clone(),
        msg_id: r.msg_id,
        device_time_ms: r.time_ms,
        received_ms: now.as_millis(),
        payload: plain.slice_ref(r.encoded()),
    }
}
